"""Checks for chapter 9, "Making it fast": intensity, the index-add backward, chunk sizes, a roofline prediction."""

from __future__ import annotations

import torch

from bralib.exercises import Case, compare, exercise


@exercise("matmul_intensity")
def _matmul_intensity():
    hint = "FLOPs = 2*m*n*k; bytes = (m*k + k*n + m*n) * itemsize; return FLOPs / bytes as a float"
    for m, n, k, itemsize, what in [
        (1024, 1024, 1024, 4, "a large square product: compute-bound"),
        (64, 64, 32, 4, "stage 1 of BiFormer-T: 64 queries x 64 keys, head width 32"),
        (4, 64, 32, 4, "stage 3: 4 queries against 16 regions x 4 keys"),
        (1, 4096, 4096, 2, "a matrix-vector product in bfloat16: memory-bound"),
    ]:
        expected = 2 * m * n * k / ((m * k + k * n + m * n) * itemsize)
        yield Case(what, args=(m, n, k), kwargs={"itemsize": itemsize}, expected=expected, rtol=1e-9, hint=hint)


@exercise("scatter_add_rows")
def _scatter_add_rows():
    hint = "torch.zeros(n_rows, C).index_add_(0, rows, grads); out[rows] += grads loses repeated rows"
    gen = torch.Generator().manual_seed(9)
    cases = [
        (torch.tensor([2, 0, 1]), 3, "each row gathered once (a permutation)"),
        (torch.tensor([1, 1, 1, 3]), 5, "row 1 gathered three times, rows 0, 2, 4 never"),
        (torch.randint(0, 6, (40,), generator=gen), 6, "40 gathered rows from 6 sources, float64"),
    ]
    for i, (rows, n_rows, what) in enumerate(cases):
        dtype = torch.float64 if i == 2 else torch.float32
        grads = torch.randn(len(rows), 3, generator=gen, dtype=dtype)
        expected = torch.zeros(n_rows, 3, dtype=dtype).index_add_(0, rows, grads)

        def verify(got, expected=expected):
            if not isinstance(got, torch.Tensor):
                return f"expected a torch.Tensor, got {type(got).__name__}"
            if got.dtype != expected.dtype:
                return f"expected dtype {expected.dtype}, got {got.dtype}"
            return compare(got, expected, atol=1e-6, rtol=1e-5)  # shape, then values (rtol as torch.allclose's)

        yield Case(what, args=(grads, rows, n_rows), verify=verify, hint=hint)


@exercise("regions_per_chunk")
def _regions_per_chunk():
    hint = "bytes per region = 2 * topk * tokens_per_region * channels * itemsize; cache // that, but at least 1"
    for cache, n, channels, topk, itemsize, what in [
        (2 * 2**20, 64, 64, 1, 4, "2 MiB, BiFormer-T stage 1 (n=64, C=64, k=1)"),
        (2 * 2**20, 16, 128, 4, 4, "2 MiB, stage 2 (n=16, C=128, k=4)"),
        (2 * 2**20, 4, 256, 16, 4, "2 MiB, stage 3 (n=4, C=256, k=16)"),
        (1000, 4, 256, 16, 2, "a cache smaller than one region: still 1"),
        (3 * 2**20, 16, 128, 4, 2, "3 MiB in bfloat16: not a power of two"),
    ]:
        expected = max(1, cache // (2 * topk * n * channels * itemsize))
        yield Case(what, args=(cache, n, channels, topk), kwargs={"itemsize": itemsize}, expected=expected, hint=hint)


def _model_times(side, channels, heads, n_win, topk, peak, bandwidth):
    """The docstring's roofline model: (gather time, dense time) in seconds, float32."""
    tokens, tc = side * side, side * side * channels
    n = tokens // n_win**2
    attn, gathered = tokens * heads * topk * n, topk * tc
    steps = [(0, 6 * tc), (0, 4 * gathered), (0, 2 * (tc + 2 * gathered)), (2 * tc * topk * n, tc + gathered + attn),
             (5 * attn, 2 * attn), (2 * tc * topk * n, attn + gathered + tc), (0, 4 * tc)]  # fmt: skip
    gather = sum(max(flops / peak, 4 * numbers / bandwidth) for flops, numbers in steps)
    dense = max(4 * tokens * tokens * channels / peak, (16 * tc + tokens * tokens) / bandwidth)
    return gather, dense


@exercise("predicted_winner")
def _predicted_winner():
    hint = "time of a step = max(FLOPs / peak, 4 * numbers / bandwidth); sum the gather's seven steps; compare"
    for args, what in [
        ((56, 64, 2, 7, 1, 5e10, 1e10), "stage 1 of BiFormer-T on a CPU-like core (50 GFLOP/s, 10 GB/s)"),
        ((28, 128, 4, 7, 4, 5e10, 1e10), "stage 2, the same core"),
        ((14, 256, 8, 7, 16, 5e10, 1e10), "stage 3, the same core"),
        ((56, 64, 2, 7, 1, 989e12, 3.35e12), "stage 1 on an H100-like GPU (989 TFLOP/s, 3.35 TB/s)"),
        ((28, 28, 1, 7, 2, 1e10, 1e11), "an odd machine with more bandwidth than arithmetic"),
    ]:
        gather, dense = _model_times(*args)
        yield Case(what, args=args, expected="dense" if dense < gather else "gather", hint=hint)
