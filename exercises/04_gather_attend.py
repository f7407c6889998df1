"""Exercises for chapter 4, "Gather, attend, enhance".

Maps are channels-last, (B, H, W, C); regions and tokens are numbered row-major, as bralib.ops.to_regions
does (you may use to_regions and from_regions from bralib.ops). Tags: difficulty, and kind (*transcription*,
*design* or *experiment*, as in chapter 0). Check your functions from the chapter's notebook or a terminal:

    bralib exercise check --chapter 4
"""

import torch


def gather_regions(kv_regions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[easy, transcription] Collect the routed regions of every region.

    kv_regions: (B, S*S, n, C) keys or values grouped by region; index: (B, S*S, topk) long, the regions each
    region routes to (each image has its own). Returns (B, S*S, topk, n, C) where entry [b, r, t] is region
    index[b, r, t] of image b.
    """
    raise NotImplementedError("fill in gather_regions")


def per_head_routed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int
) -> torch.Tensor:
    """[hard, design] BRA's token attention when every head has its own routing graph.

    q, k: (B, H, W, C); v: (B, H, W, Cv); index: (B, heads, n_win**2, topk) long, as chapter 3's
    per_head_routing_index returns: head h of region r attends to every token of the regions index[b, h, r].
    Head h owns channels h*C/heads ... (h+1)*C/heads - 1 of q and k, and likewise of v; scale each head's
    scores by (C / heads) ** -0.5 and concatenate the heads' outputs. Returns (B, H, W, Cv).

    With the same index in every head it must equal the chapter's routed_attention. Why can the chapter's
    version gather once for all heads, and what does this one have to gather instead?
    """
    raise NotImplementedError("fill in per_head_routed_attention")


def error_vs_full_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_win: int, num_heads: int
) -> list[float]:
    """[medium, experiment] How far BRA is from full attention, for every number of routed regions.

    q, k: (B, H, W, C); v: (B, H, W, Cv). For topk = 1, 2, ..., n_win**2, compute BRA's token attention with
    the routing of chapter 3 (region means of q and k over all channels, top-k per row), num_heads heads and
    the per-head scale (C / num_heads) ** -0.5 (no LCE, no projections), and full multi-head attention with
    the same heads and scale. Return the relative errors ||BRA - full|| / ||full|| (Frobenius norms over the
    whole output), one Python float per topk, in order. (bralib.ops.bra and
    torch.nn.functional.scaled_dot_product_attention may help.)

    Then experiment: on random q, k, v and on q = k = the chapter's astronaut features (v random), how fast
    does the error fall with k? Why is the last value 0, and why are random inputs the worst case for routing?
    """
    raise NotImplementedError("fill in error_vs_full_attention")
