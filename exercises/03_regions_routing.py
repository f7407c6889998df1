"""Exercises for chapter 3, "Regions and the routing graph".

Maps are channels-last, (B, H, W, C). Regions are numbered row-major (region r = i * n_win + j is in region
row i, region column j), and so are the tokens inside a region. Tags: difficulty, and kind (*transcription*,
*design* or *experiment*, as in chapter 0). Check your functions from the chapter's notebook or a terminal:

    bralib exercise check --chapter 3
"""

import torch


def to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """[easy, transcription] Cut a (B, H, W, C) map into n_win x n_win regions: (B, n_win**2, H*W // n_win**2, C).

    H and W are multiples of n_win (not necessarily equal). Use reshape and permute only.
    """
    raise NotImplementedError("fill in to_regions")


def per_head_routing_index(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int, num_heads: int) -> torch.Tensor:
    """[medium, design] Routing with one routing graph per head, instead of BiFormer's one graph for all heads.

    q, k: (B, H, W, C). Head h owns the channels h*C/num_heads ... (h+1)*C/num_heads - 1. For each head,
    average its channels of q and of k over the tokens of each region, score every region's query against
    every region's key (row i: region i's query), and keep the topk best key regions of each row, sorted by
    decreasing score. Returns (B, num_heads, n_win**2, topk) long. (bralib.ops.to_regions and
    bralib.ops.route_regions may help.) What does a per-head graph cost, in memory and in gathers, compared
    with the shared one?
    """
    raise NotImplementedError("fill in per_head_routing_index")


def routing_overlap(index_a: torch.Tensor, index_b: torch.Tensor) -> float:
    """[medium, experiment] How much two routings agree: the mean share of routed regions they have in common.

    index_a, index_b: (..., topk) long, the same shape; each row lists topk distinct regions (in any order).
    For each row, count the regions that appear in both rows and divide by topk; return the mean over all rows
    as a Python float (1.0: same regions, 0.0: none shared).

    Then experiment with the chapter's astronaut features (S = 7, k = 4): how much do per-head graphs (split
    the 5 feature channels into heads of your choice, or use random projections) agree with the shared graph?
    How much does a random routing (k random regions per row) agree with the content routing, and what
    overlap would you expect from chance alone?
    """
    raise NotImplementedError("fill in routing_overlap")
