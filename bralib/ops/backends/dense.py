"""The dense backend: attention over all H*W tokens through fused SDPA, with the routed-region mask.

It does S*S / topk times the arithmetic of the gather, but it moves no gathered copies and runs as one
large fused kernel. Where regions are tiny and k is a large share of S*S (BiFormer's stage 3: 4-token
regions, k = 16 of 49, 196 tokens) that trade wins: the gather's many small matrix products cost more than
the dense product's wasted work. At stage 1 (3136 tokens, k = 1) it is hopeless. One boolean mask,
built from the routing index, is shared by every head.

A masked-out key is weighed by zero inside the kernel, and zero times NaN is NaN. When the keys or values
are not all finite, their NaN and infinities are zeroed first and the outputs they reach through the
routing made NaN after (the rule of :mod:`bralib.ops.nonfinite`), so a NaN goes exactly where the gathering
backends send it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bralib.ops.backends.reference import split_heads
from bralib.ops.masks import routed_mask
from bralib.ops.nonfinite import add_routed_nan, finite_or_zero, known_finite, routed_nan


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    batch, height, width, _ = q.shape
    tokens, c_v = height * width, v.shape[-1]
    finite = known_finite(k, v)
    mask = routed_mask(index, height, width, n_win)[:, None]  # (B, 1, N, N) bool, True = may attend
    q_h, k_h, v_h = (split_heads(t.reshape(batch, tokens, t.shape[-1]), num_heads) for t in (q, k, v))
    if not finite:
        # Zeroed after the head split: the same values, and inductor compiles it with dynamic shapes (zeroing
        # the strided q/k/v slices of a qkv projection first made it fail to order their strides).
        k_h, v_h = finite_or_zero(k_h), finite_or_zero(v_h)
    out = F.scaled_dot_product_attention(q_h, k_h, v_h, attn_mask=mask, scale=scale)  # (B, heads, N, Cv/heads)
    out = out.transpose(1, 2).reshape(batch, height, width, c_v)
    if not finite:
        out = add_routed_nan(out, routed_nan(k, v, index, num_heads=num_heads, n_win=n_win), n_win)
    return out
