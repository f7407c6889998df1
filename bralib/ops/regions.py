"""Cutting a feature map into S x S regions and putting it back together.

BRA works on regions: an (H, W) grid of tokens is split into ``n_win`` x ``n_win`` non-overlapping
rectangles (S = ``n_win`` in the paper's notation), each holding (H/S) * (W/S) tokens. Regions are
numbered row-major, and inside a region tokens are row-major too.
"""

from __future__ import annotations

import torch

from bralib.ops.validate import check_divisible, check_positive_int, check_rank


def to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """Split a channels-last map into regions.

    Args:
        x: (B, H, W, C) features; H and W must be multiples of ``n_win``.
        n_win: regions per side, S.

    Returns:
        (B, S*S, H*W/S^2, C): region r = (row i, column j) is ``r = i * S + j``.
    """
    check_rank("x", x, 4, "(B, H, W, C)")
    check_positive_int("n_win", n_win)
    batch, height, width, channels = x.shape
    check_divisible("H", height, n_win)
    check_divisible("W", width, n_win)
    h, w = height // n_win, width // n_win
    x = x.reshape(batch, n_win, h, n_win, w, channels)  # (B, S, h, S, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, n_win * n_win, h * w, channels)


def from_regions(regions: torch.Tensor, n_win: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_regions`: (B, S*S, H*W/S^2, C) -> (B, H, W, C)."""
    check_rank("regions", regions, 4, "(B, S*S, tokens_per_region, C)")
    check_positive_int("n_win", n_win)
    check_divisible("height", height, n_win)
    check_divisible("width", width, n_win)
    batch, n_regions, tokens, channels = regions.shape
    h, w = height // n_win, width // n_win
    if n_regions != n_win * n_win or tokens != h * w:
        raise ValueError(
            f"regions has shape {tuple(regions.shape)}, but n_win={n_win} with height={height}, "
            f"width={width} needs (B, {n_win * n_win}, {h * w}, C)"
        )
    x = regions.reshape(batch, n_win, n_win, h, w, channels)  # (B, S, S, h, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def region_of_tokens(height: int, width: int, n_win: int, device: torch.device | None = None) -> torch.Tensor:
    """(H*W,) long: the region number of every token of an (H, W) grid, tokens in row-major order."""
    check_divisible("height", height, n_win)
    check_divisible("width", width, n_win)
    rows = torch.arange(height, device=device) // (height // n_win)
    cols = torch.arange(width, device=device) // (width // n_win)
    return (rows[:, None] * n_win + cols[None, :]).reshape(-1)
