"""Memory layouts shared by the fast backends: region-major tensors, whole-region gathers, head views.

The paper's gather (``gather.py``) broadcasts the key map to (B, S^2, S^2, n, C) and picks k regions with an
element-wise ``torch.gather``: it reads an int64 index per element and its backward scatters into a buffer of
the broadcast shape. The fast backends instead lay keys out region-major once, (B*S^2, n*C), so one routed
region is one contiguous row, and copy whole rows with ``index_select`` (a row memcpy; its backward is an
``index_add`` by the same rows). Heads stay inside the channel dimension and are exposed as strided views,
so splitting them costs no copy.
"""

from __future__ import annotations

import torch

from bralib.ops.regions import to_regions


def region_view(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, S, S, H/S, W/S, C): the regions of ``x`` as a strided view (no copy).

    Writing into this view writes into ``x``: the fast backends copy their region-major results straight
    into the (B, H, W, C) output through it.
    """
    batch, height, width, channels = x.shape
    x = x.view(batch, n_win, height // n_win, n_win, width // n_win, channels)  # (B, S, h, S, w, C)
    return x.permute(0, 1, 3, 2, 4, 5)


def routed_rows(index: torch.Tensor) -> torch.Tensor:
    """(B, S*S, topk) routing index -> (B*S*S*topk,) row numbers into a (B*S*S, ...) region-major tensor.

    Region ``index[b, r, t]`` of image b is row ``b * S*S + index[b, r, t]``.
    """
    batch, n_regions, _ = index.shape
    offsets = torch.arange(batch, device=index.device).view(batch, 1, 1) * n_regions  # (B, 1, 1)
    return (index + offsets).reshape(-1)


def gather_rows(x_regions: torch.Tensor, rows: torch.Tensor, topk: int) -> torch.Tensor:
    """Copy the routed regions of every region as whole rows.

    Args:
        x_regions: (B, S*S, n, C) region-major keys or values (contiguous).
        rows: (B*S*S*topk,) from :func:`routed_rows`.
        topk: routed regions per region.

    Returns:
        (B, S*S, topk*n, C): region r's k routed regions, one after another, as one key sequence.
    """
    batch, n_regions, tokens, channels = x_regions.shape
    flat = x_regions.reshape(batch * n_regions, tokens * channels)  # one row per region
    return flat.index_select(0, rows).view(batch, n_regions, topk * tokens, channels)


def head_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, S*S, L, C) -> (B*S*S, heads, L, C/heads), a strided view: heads are never copied out."""
    batch, n_regions, length, channels = x.shape
    return x.view(batch * n_regions, length, num_heads, channels // num_heads).transpose(1, 2)


def merge_head_view(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*S*S, heads, n, d) -> (B, S*S, n, heads*d); a view when x has the (B*S*S, n, heads, d) memory layout."""
    rows, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, rows // batch, tokens, heads * dim)


def regions_of(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, S*S, n, C) contiguous: the one copy that puts a region's tokens together."""
    return to_regions(x, n_win).contiguous()


def write_regions(out: torch.Tensor, regions: torch.Tensor, n_win: int) -> None:
    """Copy region-major (B, S*S, n, C) into the (B, H, W, C) tensor ``out``, in place, in one pass."""
    batch, height, width, channels = out.shape
    h, w = height // n_win, width // n_win
    region_view(out, n_win).copy_(regions.reshape(batch, n_win, n_win, h, w, channels))
