"""The dense backend: attention over all H*W tokens through fused SDPA, with the routed-region mask.

It does S*S / topk times the arithmetic of the gather, but it moves no gathered copies and runs as one
large fused kernel. Where regions are tiny and k is a large share of S*S (BiFormer's stage 3: 4-token
regions, k = 16 of 49, 196 tokens) that trade wins: the gather's many small matrix products cost more than
the dense product's wasted work. At stage 1 (3136 tokens, k = 1) it is hopeless. One boolean mask,
built from the routing index, is shared by every head.

A masked-out key is weighed by zero inside the kernel, and zero times NaN is NaN: non-finite keys and values
are zeroed first and the outputs they reach through the routing set to NaN after (the rule of
:mod:`bralib.ops.nonfinite`), so a NaN goes exactly where the gathering backends send it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bralib.ops.backends.reference import split_heads
from bralib.ops.masks import routed_mask
from bralib.ops.nonfinite import finite_or_zero, poison, routed_nonfinite


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    batch, height, width, _ = q.shape
    tokens, c_v = height * width, v.shape[-1]
    reach = routed_nonfinite(k, v, index, num_heads=num_heads, n_win=n_win)  # (B, H, W, Cv)
    mask = routed_mask(index, height, width, n_win)[:, None]  # (B, 1, N, N) bool, True = may attend
    k, v = finite_or_zero(k), finite_or_zero(v)
    q_h, k_h, v_h = (split_heads(t.reshape(batch, tokens, t.shape[-1]), num_heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q_h, k_h, v_h, attn_mask=mask, scale=scale)  # (B, heads, N, Cv/heads)
    return poison(out.transpose(1, 2).reshape(batch, height, width, c_v), reach)
