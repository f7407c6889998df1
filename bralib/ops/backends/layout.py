"""Memory layouts shared by the fast backends: token-level gathers into region-major order, head views.

The gather backend (``gather.py``) copies the key map into region-major order, copies the k routed regions of
every region out of that (an ``index_select`` over whole regions), and the batched matmuls then copy every
head out again. The fast backends copy each key *token* (a row of C channels) exactly once, straight from the
(B, H, W, C) map into its place in the gathered, region-major tensor, with one ``index_select`` over rows (a
row memcpy; its backward is an ``index_add`` into the token rows of the original map). Queries are put into
region order the same way. Heads stay inside the channel dimension and are exposed as strided views, so
splitting them costs no copy.
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


def region_tokens(height: int, width: int, n_win: int, device: torch.device | None = None) -> torch.Tensor:
    """(S*S, n) long: the row-major token numbers of every region's tokens, region by region."""
    grid = torch.arange(height * width, device=device).view(1, height, width, 1)
    return to_regions(grid, n_win).reshape(n_win * n_win, -1)


def token_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B*H*W, C): one row per token, a view when possible (slices of a qkv output are)."""
    return x.flatten(0, 2)


def query_token_index(batch: int, height: int, width: int, n_win: int, device: torch.device) -> torch.Tensor:
    """(B*H*W,) token rows that put a (B, H, W, C) map in region-major order (B, S*S, n, C)."""
    offsets = torch.arange(batch, device=device).view(batch, 1, 1) * (height * width)  # (B, 1, 1)
    return (region_tokens(height, width, n_win, device) + offsets).reshape(-1)


def routed_token_index(index: torch.Tensor, height: int, width: int, n_win: int) -> torch.Tensor:
    """(B, S*S, topk) routing index -> (B*S*S*topk*n,) token rows of every region's routed regions, in order."""
    batch = index.shape[0]
    offsets = torch.arange(batch, device=index.device).view(batch, 1, 1, 1) * (height * width)  # (B, 1, 1, 1)
    tokens = region_tokens(height, width, n_win, index.device)  # (S^2, n)
    return (tokens[index] + offsets).reshape(-1)  # (B, S^2, topk, n) flattened


def gather_tokens(x: torch.Tensor, rows: torch.Tensor, n_regions: int) -> torch.Tensor:
    """Rows ``rows`` of the token map x: (B, H, W, C) -> (B, S*S, L, C), L = len(rows) / (B * S*S)."""
    batch, channels = x.shape[0], x.shape[-1]
    return token_rows(x).index_select(0, rows).view(batch, n_regions, -1, channels)


def head_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, S*S, L, C) -> (B*S*S, heads, L, C/heads), a strided view: heads are never copied out."""
    batch, n_regions, length, channels = x.shape
    return x.view(batch * n_regions, length, num_heads, channels // num_heads).transpose(1, 2)


def merge_head_view(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*S*S, heads, n, d) -> (B, S*S, n, heads*d); a view when x has the (B*S*S, n, heads, d) memory layout."""
    rows, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, rows // batch, tokens, heads * dim)


def write_regions(out: torch.Tensor, regions: torch.Tensor, n_win: int) -> None:
    """Copy region-major (B, S*S, n, C) into the (B, H, W, C) tensor ``out``, in place, in one pass."""
    batch, height, width, channels = out.shape
    h, w = height // n_win, width // n_win
    region_view(out, n_win).copy_(regions.reshape(batch, n_win, n_win, h, w, channels))
