"""The dense backend: attention over all H*W tokens through fused SDPA, with the routed-region mask.

It does S*S / topk times the arithmetic of the gather, but it moves no gathered copies and runs as one
large fused kernel. Where regions are tiny and k is a large share of S*S (BiFormer's stage 3: 4-token
regions, k = 16 of 49, 196 tokens) that trade wins: the gather's many small matrix products cost more than
the dense product's wasted work. At stage 1 (3136 tokens, k = 1) it is hopeless. One boolean mask,
built from the routing index, is shared by every head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bralib.ops.backends.reference import split_heads
from bralib.ops.masks import routed_mask


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    batch, height, width, _ = q.shape
    mask = routed_mask(index, height, width, n_win)[:, None]  # (B, 1, N, N) bool, True = may attend
    q_h, k_h, v_h = (split_heads(t.reshape(batch, height * width, -1), num_heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q_h, k_h, v_h, attn_mask=mask, scale=scale)  # (B, heads, N, Cv/heads)
    return out.transpose(1, 2).reshape(batch, height, width, v.shape[-1])
