"""Exercises for chapter 4, "Gather, attend, enhance".

Maps are channels-last, (B, H, W, C); regions and tokens are numbered row-major, as bralib.ops.to_regions
does (you may use to_regions and from_regions from bralib.ops). Check your functions from the chapter's
notebook or a terminal:

    bralib exercise check --chapter 4
"""

import torch


def gather_regions(kv_regions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Collect the routed regions of every region.

    kv_regions: (B, S*S, n, C) keys or values grouped by region; index: (B, S*S, topk) long, the regions each
    region routes to (each image has its own). Returns (B, S*S, topk, n, C) where entry [b, r, t] is region
    index[b, r, t] of image b.
    """
    raise NotImplementedError("fill in gather_regions")


def routed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int, num_heads: int
) -> torch.Tensor:
    """Multi-head token-to-token attention of bi-level routing (Algorithm 1, steps 6-7 and 9).

    q, k: (B, H, W, C); v: (B, H, W, Cv); index: (B, n_win**2, topk). The queries of region r attend to every
    token of the regions index[b, r]. Split the channels into num_heads heads (head h gets channels
    h*C/num_heads ... (h+1)*C/num_heads - 1, and likewise for v), scale each head's scores by
    (C / num_heads) ** -0.5, and concatenate the heads. Returns (B, H, W, Cv).
    """
    raise NotImplementedError("fill in routed_attention")


def local_context(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Local context enhancement: a depthwise convolution of a channels-last map.

    v: (B, H, W, C); weight: (C, 1, K, K) with K odd (one K x K filter per channel); bias: (C,). Zero padding
    keeps the size. Returns (B, H, W, C).
    """
    raise NotImplementedError("fill in local_context")
