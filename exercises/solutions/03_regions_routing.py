"""Solutions for chapter 3, "Regions and the routing graph"."""

import torch


def to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, S, h, S, w, C) -> (B, S, S, h, w, C) -> (B, S^2, h*w, C)."""
    batch, height, width, channels = x.shape
    h, w = height // n_win, width // n_win
    x = x.reshape(batch, n_win, h, n_win, w, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, n_win * n_win, h * w, channels)


def per_head_routing_index(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int, num_heads: int) -> torch.Tensor:
    """Split the channels into heads first, then route each head as chapter 3 routes the whole width.

    Cost: the adjacency becomes (B, heads, S^2, S^2), heads times the (small) shared one; the real price is
    downstream, since every head then gathers its own regions: heads x k region copies of keys and values
    instead of k copies shared by all heads' channels, and no single contiguous gather per region.
    """
    batch, height, width, channels = q.shape

    def region_heads(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, heads, S^2, C/heads)
        means = to_regions(t, n_win).mean(dim=2)  # (B, S^2, C): a mean per channel, so per head too
        return means.unflatten(-1, (num_heads, channels // num_heads)).transpose(1, 2)

    adjacency = region_heads(q) @ region_heads(k).transpose(-1, -2)  # (B, heads, S^2, S^2)
    return torch.topk(adjacency, k=topk, dim=-1).indices


def routing_overlap(index_a: torch.Tensor, index_b: torch.Tensor) -> float:
    """Compare every element of a row with every element of the other row: (..., k, 1) == (..., 1, k).

    What the experiment shows: per-head graphs agree with the shared graph only partly (each head sees a
    slice of the channels, so its region means rank regions differently); random routing agrees with content
    routing about as often as chance predicts, k / S^2 per routed region (4 / 49, about 8%, at S = 7, k = 4),
    a little more when the content routing picks the query region itself and a random row happens to too.
    """
    shared = (index_a[..., :, None] == index_b[..., None, :]).any(-1).sum(-1)  # (...,): common regions per row
    return float((shared.float() / index_a.shape[-1]).mean())
