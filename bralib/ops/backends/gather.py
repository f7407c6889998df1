"""The gather backend: the paper's algorithm (Algorithm 1, steps 6-7), batched.

Every region gathers the keys and values of its k routed regions into one (k * H*W/S^2)-token set,
then its queries attend to that set with two batched matmuls. Cost: O(HW * k * HW/S^2 * C) instead
of O((HW)^2 C); the price is a copy of k key/value regions per region in memory.
"""

from __future__ import annotations

import torch

from bralib.ops.regions import from_regions, to_regions


def gather_kv(kv_regions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Collect the routed regions of every region.

    Args:
        kv_regions: (B, S*S, n, C) keys or values grouped by region.
        index: (B, S*S, topk) routed region numbers.

    Returns:
        (B, S*S, topk, n, C): entry [b, r, t] is region ``index[b, r, t]`` of ``kv_regions[b]``.
    """
    batch, n_regions, tokens, channels = kv_regions.shape
    topk = index.shape[-1]
    # Select whole regions from the flattened (B*S^2, n, C) tensor: the backward of index_select
    # accumulates into a K/V-sized buffer, where torch.gather on a broadcast (B, S^2, S^2, n, C) view
    # (the released code's formulation) would allocate S^2 times K/V for its gradient.
    offsets = torch.arange(batch, device=index.device)[:, None, None] * n_regions  # (B, 1, 1)
    flat_index = (index + offsets).reshape(-1)  # (B*S^2*topk,)
    picked = kv_regions.reshape(batch * n_regions, tokens, channels).index_select(0, flat_index)
    return picked.reshape(batch, n_regions, topk, tokens, channels)


def region_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, S*S, n, C) -> (B, S*S, heads, n, C/heads)."""
    batch, n_regions, tokens, channels = x.shape
    return x.reshape(batch, n_regions, tokens, num_heads, channels // num_heads).transpose(2, 3)


def gathered_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, S*S, topk, n, C) -> (B, S*S, heads, topk*n, C/heads): the gathered set as one key sequence."""
    batch, n_regions, topk, tokens, channels = x.shape
    x = x.reshape(batch, n_regions, topk * tokens, num_heads, channels // num_heads)
    return x.transpose(2, 3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, S*S, heads, n, d) -> (B, S*S, n, heads*d)."""
    batch, n_regions, heads, tokens, dim = x.shape
    return x.transpose(2, 3).reshape(batch, n_regions, tokens, heads * dim)


def gather_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    height, width = q.shape[1:3]
    q_r = region_heads(to_regions(q, n_win), num_heads)  # (B, S^2, heads, n, d)
    k_g = gathered_heads(gather_kv(to_regions(k, n_win), index), num_heads)  # (B, S^2, heads, k*n, d)
    v_g = gathered_heads(gather_kv(to_regions(v, n_win), index), num_heads)  # (B, S^2, heads, k*n, dv)
    attn = torch.softmax((q_r * scale) @ k_g.transpose(-1, -2), dim=-1)  # (B, S^2, heads, n, k*n)
    out = merge_heads(attn @ v_g)  # (B, S^2, n, Cv)
    return from_regions(out, n_win, height, width)
