"""Sparse attention patterns as boolean token masks, and dense attention under such a mask.

Every mask here is (N, N) over the tokens of an (H, W) grid in row-major order (N = H*W):
``mask[i, j]`` is True when query token i may attend to key token j. Static patterns (windows,
axial, dilated, criss-cross) depend on positions only; :func:`routed_mask` depends on the content,
through the routing index. :func:`masked_attention` is the obviously-right dense computation that
every BRA backend is checked against.
"""

from __future__ import annotations

import torch

from bralib.ops.regions import region_of_tokens
from bralib.ops.routing import routing_mask
from bralib.ops.validate import check_positive_int


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    check_positive_int("height", height)
    check_positive_int("width", width)
    rows = torch.arange(height).repeat_interleave(width)  # (N,)
    cols = torch.arange(width).repeat(height)  # (N,)
    return rows, cols


def full_mask(height: int, width: int) -> torch.Tensor:
    """Every token sees every token: (N, N) all True."""
    check_positive_int("height", height)
    check_positive_int("width", width)
    return torch.ones(height * width, height * width, dtype=torch.bool)


def window_mask(height: int, width: int, window: int, shift: int = 0) -> torch.Tensor:
    """Non-overlapping ``window`` x ``window`` windows (Swin); ``shift`` moves the grid of windows.

    A shifted window is computed as the cyclic shift Swin uses, but without the wrap-around: tokens
    attend within the same shifted window of the un-rolled grid.
    """
    check_positive_int("window", window)
    if not 0 <= shift < window:
        raise ValueError(f"shift must be in [0, window) = [0, {window}), got {shift}")
    rows, cols = _grid(height, width)
    win_r = (rows + shift) // window
    win_c = (cols + shift) // window
    return (win_r[:, None] == win_r[None, :]) & (win_c[:, None] == win_c[None, :])


def axial_mask(height: int, width: int) -> torch.Tensor:
    """Axial attention (row and column): same row or same column — also called criss-cross."""
    rows, cols = _grid(height, width)
    return (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])


def criss_cross_mask(height: int, width: int) -> torch.Tensor:
    """Criss-cross attention (CCNet): each token sees its own row and column."""
    return axial_mask(height, width)


def dilated_mask(height: int, width: int, dilation: int) -> torch.Tensor:
    """Dilated (strided) attention: tokens whose coordinates agree modulo ``dilation`` attend to each other."""
    check_positive_int("dilation", dilation)
    rows, cols = _grid(height, width)
    return ((rows[:, None] - rows[None, :]) % dilation == 0) & ((cols[:, None] - cols[None, :]) % dilation == 0)


def routed_mask(index: torch.Tensor, height: int, width: int, n_win: int) -> torch.Tensor:
    """The token mask that BRA's routing index induces.

    Args:
        index: (B, S*S, topk) routing index from :func:`bralib.ops.route_regions`.

    Returns:
        (B, N, N) bool: token i sees token j when j's region is among the top-k regions of i's region.
    """
    if index.dim() != 3 or index.shape[1] != n_win * n_win:
        raise ValueError(f"index must be (B, n_win**2={n_win * n_win}, topk), got {tuple(index.shape)}")
    region = region_of_tokens(height, width, n_win, device=index.device)  # (N,)
    allowed = routing_mask(index, n_win * n_win)  # (B, S^2, S^2)
    return allowed[:, region][:, :, region]  # (B, N, N)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Dense softmax attention where ``mask`` (True = allowed) removes key tokens.

    Args:
        q, k: (..., N, d); v: (..., N, dv); mask broadcastable to (..., N, N). Every query must be
            allowed at least one key.

    Returns:
        (..., N, dv)
    """
    logits = (q @ k.transpose(-1, -2)) * scale  # (..., N, N)
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def neighbourhood_mask(height: int, width: int, window: int) -> torch.Tensor:
    """Sliding-window (neighbourhood) attention: each token sees the ``window`` x ``window`` tokens around it.

    The window is centred on the query and, near the border, slid inwards to stay inside the grid (as in
    Neighborhood Attention), so every query sees exactly ``window**2`` keys. ``window`` must be odd and at
    most ``min(height, width)``.
    """
    check_positive_int("window", window)
    if window % 2 == 0 or window > min(height, width):
        raise ValueError(f"window must be odd and at most min(height, width) = {min(height, width)}, got {window}")
    rows, cols = _grid(height, width)
    top = (rows - window // 2).clamp(0, height - window)  # (N,) first row of each query's window
    left = (cols - window // 2).clamp(0, width - window)  # (N,)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + window)
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + window)
    return in_rows & in_cols


def row_mask(height: int, width: int) -> torch.Tensor:
    """Row attention: each token sees its own row (one half of sequential axial attention)."""
    rows, _ = _grid(height, width)
    return rows[:, None] == rows[None, :]


def column_mask(height: int, width: int) -> torch.Tensor:
    """Column attention: each token sees its own column (the other half of sequential axial attention)."""
    _, cols = _grid(height, width)
    return cols[:, None] == cols[None, :]
