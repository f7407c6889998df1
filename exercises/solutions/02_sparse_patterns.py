"""Solutions for chapter 2, "A zoo of sparse attention patterns"."""

import torch


def _rows_and_cols(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every token, row-major: two (N,) long tensors."""
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return rows, cols


def window_mask(height: int, width: int, window: int) -> torch.Tensor:
    """Same window <=> same window row and same window column.

    Numbering tokens column by column instead would give the same relation on a permuted matrix: a different
    (N, N) tensor, which is why the check insists on row-major numbering.
    """
    rows, cols = _rows_and_cols(height, width)
    win_r, win_c = rows // window, cols // window
    return (win_r[:, None] == win_r[None, :]) & (win_c[:, None] == win_c[None, :])


def neighbourhood_mask(height: int, width: int, window: int) -> torch.Tensor:
    """Each query's window starts at its position minus window // 2, clamped into the grid."""
    rows, cols = _rows_and_cols(height, width)
    top = (rows - window // 2).clamp(0, height - window)
    left = (cols - window // 2).clamp(0, width - window)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + window)
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + window)
    return in_rows & in_cols


def routed_token_mask(index: torch.Tensor, height: int, width: int, n_win: int) -> torch.Tensor:
    """Region-level mask (B, S^2, S^2) from the index, then expanded to tokens through each token's region.

    Which way round: query i's mask row comes from the index row of i's *own* region (region(i) chose its k
    regions); key j only enters through its region number, looked up in that row. So all queries of a region
    share one mask row, and the mask is not symmetric: region a routing to b says nothing about b routing to a.
    """
    rows, cols = _rows_and_cols(height, width)
    region = (rows // (height // n_win)) * n_win + cols // (width // n_win)  # (N,)
    batch, n_regions, _ = index.shape
    region_mask = torch.zeros(batch, n_regions, n_regions, dtype=torch.bool)
    region_mask.scatter_(-1, index, True)  # region_mask[b, r, s]: region r routes to region s
    return region_mask[:, region][:, :, region]  # (B, N, N): [b, i, j] = region_mask[b, region[i], region[j]]


def two_layer_reach(first: torch.Tensor, second: torch.Tensor) -> float:
    """A path i -> m -> j exists iff (second @ first)[i, j] > 0: a boolean matrix product.

    What the experiment shows (16x16 grid, 4x4 windows): window then window reaches only the 16 tokens of the
    window, 6.25% of the pairs, however many layers: information never leaves a window. Window then shifted
    window reaches a 3x3 block of windows around each query's window, more each layer; that is why Swin
    alternates them. Criss-cross twice reaches everything (row, then column), CCNet's argument. The routed mask
    twice reaches regions routed to by regions routed to: it depends on the picture. The order matters when
    the masks differ: (second @ first) is not (first @ second) unless the masks commute, and a routed mask is
    not even symmetric.
    """
    return float(((second.float() @ first.float()) > 0).float().mean())
