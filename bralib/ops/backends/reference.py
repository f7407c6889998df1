"""The reference backend: dense attention over all H*W tokens, masked to the routed regions.

Slow (it materialises the (H*W) x (H*W) attention matrix) and obviously right: the routing index is
turned into a token mask and plain softmax attention does the rest. Every other backend is tested
against it.

Masked-out keys must contribute exactly nothing, even a NaN or an infinity: a zero weight times NaN is NaN.
When an input is not all finite, its NaN and infinities are zeroed before the dense product and the outputs
they reach through the routing are made NaN after: the rule of :mod:`bralib.ops.nonfinite`, as its definition.
"""

from __future__ import annotations

import torch

from bralib.ops.masks import masked_attention, routed_mask
from bralib.ops.nonfinite import add_query_nan, add_routed_nan, finite_or_zero, known_finite, routed_nan


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C/heads)."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, num_heads, channels // num_heads).transpose(1, 2)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    batch, height, width, _ = q.shape
    tokens, c_v = height * width, v.shape[-1]
    finite = known_finite(q, k, v)
    mask = routed_mask(index, height, width, n_win)[:, None]  # (B, 1, N, N), shared by heads
    q_h, k_h, v_h = (split_heads(t.reshape(batch, tokens, t.shape[-1]), num_heads) for t in (q, k, v))
    if not finite:
        q_h, k_h, v_h = (finite_or_zero(t) for t in (q_h, k_h, v_h))
    out = masked_attention(q_h, k_h, v_h, mask, scale)  # (B, heads, N, Cv/heads)
    out = out.transpose(1, 2).reshape(batch, height, width, c_v)
    if not finite:
        out = add_routed_nan(out, routed_nan(k, v, index, num_heads=num_heads, n_win=n_win), n_win)
        out = add_query_nan(out, q, num_heads)
    return out
