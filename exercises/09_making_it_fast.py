"""Exercises for chapter 9, "Making it fast".

Tags: difficulty, and kind (*transcription*, *design* or *experiment*, as in chapter 0). Fill in each
function, then check it from the chapter's notebook or a terminal:

    bralib exercise check --chapter 9
"""

import torch


def matmul_intensity(m: int, n: int, k: int, itemsize: int = 4) -> float:
    """[easy, transcription] Arithmetic intensity (FLOPs per byte) of one (m x k) @ (k x n) matrix product.

    Count 2 FLOPs per multiply-add, and the fewest bytes the product must move: each operand read once and
    the (m x n) result written once, ``itemsize`` bytes per element. Return a Python float.
    """
    raise NotImplementedError("fill in matmul_intensity")


def scatter_add_rows(grads: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """[medium, transcription] The backward of a row gather: add every gathered row's gradient back to its source row.

    grads: (R, C) gradients of the gathered rows; rows: (R,) long, the source row of each (rows repeat when a
    region is routed to by several regions, and some rows are never gathered). Returns (n_rows, C), same
    dtype as grads: row j is the sum of grads[i] over every i with rows[i] == j (zero if there is none).
    """
    raise NotImplementedError("fill in scatter_add_rows")


def regions_per_chunk(cache_bytes: int, tokens_per_region: int, channels: int, topk: int, itemsize: int = 4) -> int:
    """[medium, design] How many regions `lean` should process at a time so that what it gathers stays in cache.

    For every region, the gather copies the keys and the values of its topk routed regions: 2 * topk *
    tokens_per_region * channels numbers of ``itemsize`` bytes. Return the largest number of regions whose
    gathered keys and values together fit in ``cache_bytes``, but at least 1 (one region must be processed
    even if it does not fit). Evaluate it for BiFormer-T's three stages (n = 64, 16, 4 tokens per region;
    C = 64, 128, 256; k = 1, 4, 16) with a 2 MiB cache: why does a chunk of a few regions suffice, and what
    would go wrong with one region at a time?
    """
    raise NotImplementedError("fill in regions_per_chunk")


def predicted_winner(
    side: int, channels: int, heads: int, n_win: int, topk: int, peak_flops: float, bandwidth: float
) -> str:
    """[hard, experiment] Predict, with a roofline model, whether the gather or the dense backend is faster.

    One image of side x side tokens, float32 (4 bytes per number). Model each step's time as
    max(FLOPs / peak_flops, bytes / bandwidth) and sum over steps.

    * gather: the seven steps of the chapter's section 1 (its ``gather_costs`` with batch 1), where T = side**2,
      n = T // n_win**2, A = T * heads * topk * n and G = topk * T * channels: regions (0 FLOPs, 6 T C numbers),
      gather (0, 4 G), split heads (0, 2 (T C + 2 G)), Q K^T (2 T C topk n FLOPs, T C + G + A numbers),
      softmax (5 A, 2 A), A V (2 T C topk n, A + G + T C), back to the map (0, 4 T C);
    * dense: one fused attention over all T keys with a mask, as one step: 4 * T * T * channels FLOPs, and
      4 * T * channels numbers (q, k, v read, the output written) plus a boolean mask of T * T bytes.

    Return "dense" if its predicted time is smaller, else "gather". Then experiment: use this core's measured
    peak and bandwidth (the chapter's ``rates``) and compare your predictions for BiFormer-T's three stages with
    the stored benchmark's fastest forward (section 5). Where is the model right, where wrong, and what does
    it leave out? What does it predict for an H100 (about 989e12 FLOP/s in bfloat16, 3.35e12 bytes/s)?
    """
    raise NotImplementedError("fill in predicted_winner")
