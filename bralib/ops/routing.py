"""Region-level routing: which k regions each region's queries will attend to (Algorithm 1, steps 3-5)."""

from __future__ import annotations

import torch

from bralib.ops.amp import autocast_off
from bralib.ops.regions import to_regions
from bralib.ops.validate import check_positive_int, check_topk


def region_means(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, S*S, C): the mean token of every region (region-level query or key)."""
    return to_regions(x, n_win).mean(dim=2)


def route_regions(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    n_win: int,
    topk: int,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the region adjacency A_r and keep each region's top-k neighbours.

    Args:
        q, k: (B, H, W, C) queries and keys, channels-last; all channels are averaged together, so
            one routing graph serves every head.
        n_win: regions per side S.
        topk: regions each region routes to, 1 <= topk <= S*S.
        scale: multiplies the logits; default ``C ** -0.5`` like the released code. A positive scale
            does not change the top-k choice, only the logits' size.

    Returns:
        logits: (B, S*S, S*S) float32 (or float64 for float64 inputs) region adjacency A_r.
        index: (B, S*S, topk) long, each row sorted by descending score.

    The logits are computed in float32 even under autocast: with bfloat16 region means, near-ties
    flip and AMP would change *which* regions are routed, not just round the result.
    """
    check_positive_int("n_win", n_win)
    check_topk(topk, n_win)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, H, W, C), got {tuple(q.shape)} and {tuple(k.shape)}")
    with autocast_off(q.device):
        q_region = region_means(q.to(routing_dtype(q)), n_win)  # (B, S^2, C)
        k_region = region_means(k.to(routing_dtype(k)), n_win)  # (B, S^2, C)
    return top_regions(q_region, k_region, topk=topk, scale=scale)


def routing_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else routes in float32 (see :func:`route_regions`)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def top_regions(
    q_region: torch.Tensor, k_region: torch.Tensor, *, topk: int, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region adjacency and top-k from region-level queries and keys (B, S*S, C), in their own dtype."""
    scale = q_region.shape[-1] ** -0.5 if scale is None else scale
    with autocast_off(q_region.device):
        logits = (q_region * scale) @ k_region.transpose(-1, -2)  # (B, S^2, S^2)
    index = torch.topk(logits, k=topk, dim=-1, largest=True, sorted=True).indices  # (B, S^2, topk)
    return logits, index


def local_index(n_win: int, topk: int, device: torch.device | None = None) -> torch.Tensor:
    """(S*S, topk) long: every region's ``topk`` nearest regions, itself first.

    The content-blind baseline with BRA's exact cost: the same number of routed regions, chosen by
    distance (Chebyshev, then Euclidean, then region number) instead of by q/k similarity. With
    topk = 9 it is a 3x3 neighbourhood of regions.
    """
    check_positive_int("n_win", n_win)
    check_topk(topk, n_win)
    rows = torch.arange(n_win * n_win, device=device) // n_win
    cols = torch.arange(n_win * n_win, device=device) % n_win
    d_row = (rows[:, None] - rows[None, :]).abs()
    d_col = (cols[:, None] - cols[None, :]).abs()
    chebyshev = torch.maximum(d_row, d_col)
    euclid2 = d_row**2 + d_col**2
    order_key = (
        chebyshev * (4 * n_win * n_win) ** 2
        + euclid2 * (4 * n_win * n_win)
        + torch.arange(n_win * n_win, device=device)
    )
    return order_key.argsort(dim=-1)[:, :topk]


def routing_mask(index: torch.Tensor, n_regions: int) -> torch.Tensor:
    """(B, S*S, topk) routing index -> (B, S*S, S*S) bool: True where region i routes to region j."""
    mask = torch.zeros(*index.shape[:-1], n_regions, dtype=torch.bool, device=index.device)
    return mask.scatter(-1, index, True)
