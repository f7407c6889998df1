"""Solutions for chapter 9, "Making it fast"."""

import torch


def matmul_intensity(m: int, n: int, k: int, itemsize: int = 4) -> float:
    """2mnk FLOPs over (mk + kn + mn) elements moved.

    Stage 1 (64 queries, 64 keys, width 32): 2*64*64*32 / ((2048 + 2048 + 4096) * 4) = 8 FLOP/byte. Stage 3
    (4 queries, 64 keys): 16384 / ((128 + 2048 + 256) * 4), about 1.7 FLOP/byte: further below any machine's
    balance, because each gathered key is used by only 4 queries.
    """
    return 2 * m * n * k / ((m * k + k * n + m * n) * itemsize)


def scatter_add_rows(grads: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """index_add_ sums the rows that share a destination.

    Why out[rows] += grads is wrong: it is out[rows] = out[rows] + grads, an indexed *assignment*; where a row
    number repeats, every copy computes its sum from the same old value and the last write wins, so all but one
    of the gradients of a region routed to by several regions are lost.
    """
    out = torch.zeros(n_rows, grads.shape[1], dtype=grads.dtype, device=grads.device)
    return out.index_add_(0, rows, grads)


def regions_per_chunk(cache_bytes: int, tokens_per_region: int, channels: int, topk: int, itemsize: int = 4) -> int:
    """cache // bytes per region, at least 1.

    With 2 MiB: stage 1 (2*1*64*64*4 = 32 KiB per region) 64 regions, stage 2 (2*4*16*128*4 = 64 KiB) 32,
    stage 3 (2*16*4*256*4 = 128 KiB) 16. A few dozen regions fill the cache: enough work per chunk for the
    attention kernel to run efficiently, while the gathered keys and values are still in cache when it reads
    them. One region at a time would keep them in cache too, but pay a kernel call (and its overhead) for tiny
    matrix products per region: 49 x B calls per BRA call instead of a handful.
    """
    per_region = 2 * topk * tokens_per_region * channels * itemsize
    return max(1, cache_bytes // per_region)


def predicted_winner(
    side: int, channels: int, heads: int, n_win: int, topk: int, peak_flops: float, bandwidth: float
) -> str:
    """Sum of max(FLOPs / peak, bytes / bandwidth) per step for the gather; one step for dense; the smaller wins.

    What the experiment shows, with this core's rates (tens of GFLOP/s, about 10 GB/s): the model predicts
    the gather at stages 1 and 2 and dense at stage 3, as the stored benchmark measured; at stage 1 dense does
    49 times the FLOPs, at stage 3 only 3 times, while the gather moves 16 copies of K and V. What it leaves
    out: kernel-call overheads (many small steps), caches (chunked backends keep the gather in cache), and how
    well a real kernel reaches the roof; on this CPU it gets the winners right, not the ratios.

    On an H100 (balance near 300 FLOP/byte) the model predicts dense at all three stages. The stored H100
    anchors (`benchmarks/h100_anchors.json`, bfloat16, B = 64) agree at stage 3 (dense 0.26 ms against the
    gather's 1.15 ms) and stage 2 (0.54 against 0.71) but not at stage 1, where dense took 3.94 ms against 0.62:
    on paper 49x the FLOPs are nearly free at 989 TFLOP/s, but a masked dense kernel reaches a fraction of that
    peak, so the model's assumption that every step runs at its roof is what fails first.
    """
    itemsize = 4
    tokens = side * side
    n = tokens // n_win**2
    attn = tokens * heads * topk * n
    gathered = topk * tokens * channels
    tc = tokens * channels
    steps = [  # (FLOPs, numbers moved)
        (0, 6 * tc),
        (0, 4 * gathered),
        (0, 2 * (tc + 2 * gathered)),
        (2 * tc * topk * n, tc + gathered + attn),
        (5 * attn, 2 * attn),
        (2 * tc * topk * n, attn + gathered + tc),
        (0, 4 * tc),
    ]
    gather_time = sum(max(flops / peak_flops, numbers * itemsize / bandwidth) for flops, numbers in steps)
    dense_time = max(4 * tokens * tokens * channels / peak_flops, (4 * tc * itemsize + tokens * tokens) / bandwidth)
    return "dense" if dense_time < gather_time else "gather"
