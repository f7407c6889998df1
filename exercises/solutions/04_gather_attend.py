"""Solutions for chapter 4, "Gather, attend, enhance"."""

import torch
import torch.nn.functional as F

from bralib.ops import bra, from_regions, to_regions


def gather_regions(kv_regions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Advanced indexing: a (B, 1, 1) batch number next to the (B, S^2, k) index picks whole regions."""
    batch = torch.arange(kv_regions.shape[0], device=index.device)[:, None, None]
    return kv_regions[batch, index]


def per_head_routed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int
) -> torch.Tensor:
    """Split heads first, then gather per (image, head): the index gains a head axis, so does the gather.

    The chapter's version gathers once because all heads route alike: one copy of a region's keys serves every
    head's channels. With a graph per head, head h needs its own regions, so the gather copies
    heads x k regions of C/heads channels each (the same bytes as k regions of C channels), but per head, in
    heads separate index patterns: no longer one contiguous block of whole tokens per region.
    """
    batch, height, width, channels = q.shape
    heads = index.shape[1]

    def head_regions(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, heads, S^2, n, C/heads)
        return to_regions(t, n_win).unflatten(-1, (heads, -1)).permute(0, 3, 1, 2, 4)

    q_r, k_r, v_r = head_regions(q), head_regions(k), head_regions(v)
    b = torch.arange(batch)[:, None, None, None]  # (B, 1, 1, 1)
    h = torch.arange(heads)[None, :, None, None]  # (1, heads, 1, 1)
    k_g = k_r[b, h, index].flatten(3, 4)  # (B, heads, S^2, k*n, C/heads)
    v_g = v_r[b, h, index].flatten(3, 4)
    weights = torch.softmax(q_r @ k_g.transpose(-1, -2) * (channels // heads) ** -0.5, dim=-1)
    out = (weights @ v_g).permute(0, 2, 3, 1, 4).flatten(-2)  # (B, S^2, n, Cv)
    return from_regions(out, n_win, height, width)


def error_vs_full_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_win: int, num_heads: int
) -> list[float]:
    """BRA for every k against one full attention.

    The last value is 0 because with k = S^2 every query sees every token: the same softmax over the same keys
    (in another order, which a sum does not notice). Random q and k are the worst case for routing: their
    region means are nearly all alike (averages of independent noise), so the region scores say almost nothing
    about which tokens a query would weight most, and routing is close to a random choice of regions. On the
    picture's features, regions that look alike score high and hold most of a query's attention, so the error
    falls much faster with k.
    """
    batch, height, width, channels = q.shape
    scale = (channels // num_heads) ** -0.5

    def heads_first(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, heads, HW, C/heads)
        return t.flatten(1, 2).unflatten(-1, (num_heads, -1)).transpose(1, 2)

    full = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), scale=scale)
    full = full.transpose(1, 2).flatten(-2).reshape(batch, height, width, -1)  # (B, H, W, Cv)
    errors = []
    for topk in range(1, n_win * n_win + 1):
        out = bra(q, k, v, num_heads=num_heads, n_win=n_win, topk=topk, scale=scale, backend="reference")
        errors.append(float((out - full).norm() / full.norm()))
    return errors
