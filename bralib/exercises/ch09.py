"""Checks for chapter 9, "Making it fast": gather traffic, arithmetic intensity, the index-add backward."""

from __future__ import annotations

import torch

from bralib.exercises import Case, compare, exercise


@exercise("gathered_kv_bytes")
def _gathered_kv_bytes():
    hint = "keys and values: 2 tensors of batch * n_win**2 * topk * (height*width // n_win**2) * channels elements"
    for args, what in [
        ((8, 56, 56, 64, 7, 1), "BiFormer-T stage 1: B=8, 56x56, C=64, S=7, k=1"),
        ((8, 14, 14, 256, 7, 16), "BiFormer-T stage 3: B=8, 14x14, C=256, S=7, k=16"),
        ((2, 6, 9, 5, 3, 4), "a non-square map: 6x9 tokens, 3x3 regions of 2x3 tokens, k=4"),
    ]:
        batch, height, width, channels, n_win, topk = args
        expected = 2 * batch * topk * height * width * channels * 4
        yield Case(what, args=args, expected=expected, hint=hint)
    yield Case("bfloat16 (itemsize 2)", args=(1, 28, 28, 128, 7, 4), kwargs={"itemsize": 2},
               expected=2 * 4 * 28 * 28 * 128 * 2, hint=hint)  # fmt: skip


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
