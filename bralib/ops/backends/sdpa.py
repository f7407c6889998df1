"""The sdpa backend: gather the routed tokens, then PyTorch's fused ``scaled_dot_product_attention``.

The same algorithm as the gather backend, with the costs that do not need to be there taken out: every
routed key and value token is copied once, as a row, straight from the map into region-major order
(``index_select``, see ``layout.py``) instead of a region copy, a region gather and a head copy; and the
softmax(Q K^T) V of every region runs in one fused kernel (flash attention on CPU and on CUDA) that never
writes the attention matrix to memory. Autograd does the backward: the saved activations still hold the
k-times gathered keys and values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bralib.ops.backends.layout import gather_tokens, head_view, merge_head_view, query_token_index, routed_token_index
from bralib.ops.regions import from_regions


def sdpa_regions(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """Token attention over the routed regions, region-major: (B, H, W, C*) x3 -> (B, S*S, n, Cv)."""
    batch, height, width, _ = q.shape
    n_regions = n_win * n_win
    q_r = gather_tokens(q, query_token_index(batch, height, width, n_win, q.device), n_regions)  # (B, S^2, n, Cqk)
    kv_rows = routed_token_index(index, height, width, n_win)  # (B*S^2*topk*n,)
    k_g = gather_tokens(k, kv_rows, n_regions)  # (B, S^2, topk*n, Cqk)
    v_g = gather_tokens(v, kv_rows, n_regions)  # (B, S^2, topk*n, Cv)
    out = F.scaled_dot_product_attention(
        head_view(q_r, num_heads), head_view(k_g, num_heads), head_view(v_g, num_heads), scale=scale
    )  # (B*S^2, heads, n, Cv/heads)
    return merge_head_view(out, batch)  # (B, S^2, n, Cv)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int, scale: float
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    out = sdpa_regions(q, k, v, index, num_heads=num_heads, n_win=n_win, scale=scale)
    return from_regions(out, n_win, q.shape[1], q.shape[2])
