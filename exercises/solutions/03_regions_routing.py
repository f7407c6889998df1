"""Solutions for chapter 3, "Regions and the routing graph"."""

import torch


def to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, S, h, S, w, C) -> (B, S, S, h, w, C) -> (B, S^2, h*w, C)."""
    batch, height, width, channels = x.shape
    h, w = height // n_win, width // n_win
    x = x.reshape(batch, n_win, h, n_win, w, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, n_win * n_win, h * w, channels)


def from_regions(regions: torch.Tensor, n_win: int, height: int, width: int) -> torch.Tensor:
    """(B, S^2, h*w, C) -> (B, S, S, h, w, C) -> (B, S, h, S, w, C) -> (B, H, W, C)."""
    batch, _, _, channels = regions.shape
    x = regions.reshape(batch, n_win, n_win, height // n_win, width // n_win, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height, width, channels)


def routing_index(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int) -> torch.Tensor:
    """Region means -> adjacency (query regions x key regions) -> top-k per row, best first."""
    q_region = to_regions(q, n_win).mean(dim=2)  # (B, S^2, C)
    k_region = to_regions(k, n_win).mean(dim=2)  # (B, S^2, C)
    adjacency = q_region @ k_region.transpose(-1, -2)  # (B, S^2, S^2)
    return torch.topk(adjacency, k=topk, dim=-1).indices
