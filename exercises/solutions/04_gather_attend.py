"""Solutions for chapter 4, "Gather, attend, enhance"."""

import torch
import torch.nn.functional as F

from bralib.ops import from_regions, to_regions


def gather_regions(kv_regions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Advanced indexing: a (B, 1, 1) batch number next to the (B, S^2, k) index picks whole regions."""
    batch = torch.arange(kv_regions.shape[0], device=index.device)[:, None, None]
    return kv_regions[batch, index]


def routed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int, num_heads: int
) -> torch.Tensor:
    """Gather the routed regions' keys and values, attend per region and head, put the tokens back."""
    scale = (q.shape[-1] // num_heads) ** -0.5

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # (B, S^2, m, C) -> (B, S^2, heads, m, C/heads)
        return t.unflatten(-1, (num_heads, -1)).transpose(2, 3)

    q_r = split_heads(to_regions(q, n_win))
    k_g = split_heads(gather_regions(to_regions(k, n_win), index).flatten(2, 3))
    v_g = split_heads(gather_regions(to_regions(v, n_win), index).flatten(2, 3))
    weights = torch.softmax((q_r @ k_g.transpose(-1, -2)) * scale, dim=-1)
    out = (weights @ v_g).transpose(2, 3).flatten(-2)  # (B, S^2, n, Cv)
    # With index = all S^2 regions, every query sees every token once: the softmax runs over the same set of
    # keys as full attention (only in another order, which a sum does not notice), so the result is the same.
    return from_regions(out, n_win, q.shape[1], q.shape[2])


def local_context(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d wants (B, C, H, W): permute in, convolve with groups=C, permute back."""
    channels, kernel = v.shape[-1], weight.shape[-1]
    out = F.conv2d(v.permute(0, 3, 1, 2), weight, bias, padding=kernel // 2, groups=channels)
    return out.permute(0, 2, 3, 1)
