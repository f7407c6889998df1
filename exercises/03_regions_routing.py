"""Exercises for chapter 3, "Regions and the routing graph".

Maps are channels-last, (B, H, W, C). Regions are numbered row-major (region r = i * n_win + j is in region
row i, region column j), and so are the tokens inside a region. Check your functions from the chapter's
notebook or a terminal:

    bralib exercise check --chapter 3
"""

import torch


def to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """Cut a (B, H, W, C) map into n_win x n_win regions: returns (B, n_win**2, H*W // n_win**2, C).

    H and W are multiples of n_win (not necessarily equal). Use reshape and permute only.
    """
    raise NotImplementedError("fill in to_regions")


def from_regions(regions: torch.Tensor, n_win: int, height: int, width: int) -> torch.Tensor:
    """The inverse of to_regions: (B, n_win**2, height*width // n_win**2, C) -> (B, height, width, C)."""
    raise NotImplementedError("fill in from_regions")


def routing_index(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int) -> torch.Tensor:
    """The routing index of bi-level routing attention (Algorithm 1, steps 3-5).

    q, k: (B, H, W, C). Average the queries and the keys over the tokens of each region (all channels),
    score every region's query against every region's key (the region adjacency, (B, S^2, S^2), row i for
    the query of region i), and keep the topk best key regions of each row. Returns (B, n_win**2, topk) long,
    each row sorted by decreasing score.
    """
    raise NotImplementedError("fill in routing_index")
