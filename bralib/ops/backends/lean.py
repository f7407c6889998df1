"""The lean backend: the gather's algorithm with O(HW*C) saved activations and an index-add backward.

Autograd through any gather keeps the gathered keys and values (k copies of K and V) alive until the
backward, and the paper's element-wise gather adds a backward buffer the size of the broadcast key map.
:class:`LeanRegionAttention` saves only what the backward cannot cheaply rebuild — q, k, v, the routing
index, the output and the softmax statistics (one log-sum-exp per query and head) — and in the backward
re-gathers the routed tokens (a row copy, cheap next to attention) and accumulates the key and value
gradients into their source tokens with ``index_add_`` by the same rows.

On CPU, large batches run in chunks of images, so the k-times gathered keys and values exist for one chunk
at a time (a bounded transient, never saved).

Two ways to compute a chunk:

* ``"flash"`` (CPU, equal q/v head widths): ATen's CPU flash-attention kernel, which returns the log-sum-exp,
  and its backward kernel, called directly — no recomputation of the forward.
* ``"recompute"`` (every other device, or Cqk != Cv per head): the forward runs the sdpa backend without
  autograd; the backward re-runs it under autograd for one chunk at a time and differentiates it. Public
  operators only, so it is correct wherever SDPA is; it pays one extra forward in the backward.
"""

from __future__ import annotations

import torch

from bralib.ops.backends.layout import (
    gather_tokens,
    head_view,
    merge_head_view,
    query_token_index,
    routed_token_index,
    token_rows,
    write_regions,
)
from bralib.ops.backends.sdpa import sdpa_regions

# ATen's CPU flash-attention kernels (the ones F.scaled_dot_product_attention uses on CPU). Private
# operators: looked up defensively, and only used where the "flash" strategy applies.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_CPU_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
FLASH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
STRATEGIES = ("auto", "flash", "recompute")

# Bytes of gathered keys + values per chunk on CPU. Smaller chunks (a few MiB, cache-sized) measured slower
# on a busy 2-core machine: many short parallel regions stall whenever one thread is descheduled.
CPU_CHUNK_BYTES = 64 * 1024 * 1024


def flash_applies(q: torch.Tensor, v: torch.Tensor, num_heads: int) -> bool:
    """Whether the CPU flash kernels can compute this request (they need equal q and v head widths)."""
    return (
        q.device.type == "cpu"
        and _FLASH_CPU is not None
        and _FLASH_CPU_BACKWARD is not None
        and q.dtype in FLASH_DTYPES
        and q.shape[-1] == v.shape[-1]
    )


def chunk_images(q: torch.Tensor, v: torch.Tensor, topk: int, n_win: int) -> int:
    """Images per chunk: the whole batch off CPU (fewest launches); on CPU, what bounds the K/V gathers."""
    if q.device.type != "cpu":
        return q.shape[0]
    tokens = q.shape[1] * q.shape[2]
    gathered_bytes = topk * tokens * (q.shape[-1] + v.shape[-1]) * q.element_size()  # per image
    return max(1, min(q.shape[0], CPU_CHUNK_BYTES // max(gathered_bytes, 1)))


class LeanRegionAttention(torch.autograd.Function):
    """Routed-region attention whose saved activations are O(H*W*C): see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, index, num_heads: int, n_win: int, scale: float, strategy: str):
        chunk = chunk_images(q, v, index.shape[-1], n_win)
        out = q.new_empty(v.shape)  # (B, H, W, Cv)
        lse_chunks = []
        with torch.autocast(device_type=q.device.type, enabled=False):  # compute in the inputs' dtype
            for start in range(0, q.shape[0], chunk):
                part = slice(start, start + chunk)
                inputs = (q[part], k[part], v[part], index[part])
                if strategy == "flash":
                    out_regions, lse_part = _flash_forward(*inputs, num_heads, n_win, scale)
                    lse_chunks.append(lse_part)
                else:
                    out_regions = sdpa_regions(*inputs, num_heads=num_heads, n_win=n_win, scale=scale)
                write_regions(out[part], out_regions, n_win)
        lse = torch.cat(lse_chunks) if lse_chunks else None  # (B*S^2, heads, n) float32
        if strategy == "flash":
            ctx.save_for_backward(q, k, v, index, out, lse)
        else:
            ctx.save_for_backward(q, k, v, index)
        ctx.config = (num_heads, n_win, scale, strategy, chunk)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        num_heads, n_win, scale, strategy, chunk = ctx.config
        q, k, v, index = ctx.saved_tensors[:4]
        grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
        grad_out = grad_out.contiguous()
        n_regions = n_win * n_win
        with torch.autocast(device_type=q.device.type, enabled=False):
            for start in range(0, q.shape[0], chunk):
                part = slice(start, start + chunk)
                chunk_grads = [g[part] for g in grads]  # views: the helpers write into them
                if strategy == "flash":
                    out, lse = ctx.saved_tensors[4:]
                    lse_part = lse[start * n_regions : (start + chunk) * n_regions]
                    inputs = (grad_out[part], q[part], k[part], v[part], index[part], out[part], lse_part)
                    _flash_backward(*inputs, num_heads, n_win, scale, chunk_grads)
                else:
                    inputs = (grad_out[part], q[part], k[part], v[part], index[part])
                    _recompute_backward(*inputs, num_heads, n_win, scale, chunk_grads)
        grads = tuple(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad[:3], strict=True))
        return (*grads, None, None, None, None, None)


def _flash_forward(q, k, v, index, num_heads, n_win, scale):
    """One chunk: (b, H, W, C*) -> out (b, S^2, n, Cv) region-major, lse (b*S^2, heads, n)."""
    batch, height, width, _ = q.shape
    n_regions = n_win * n_win
    q_r = gather_tokens(q, query_token_index(batch, height, width, n_win, q.device), n_regions)  # (b, S^2, n, Cqk)
    kv_rows = routed_token_index(index, height, width, n_win)
    k_g, v_g = gather_tokens(k, kv_rows, n_regions), gather_tokens(v, kv_rows, n_regions)  # (b, S^2, topk*n, C*)
    out, lse = _FLASH_CPU(head_view(q_r, num_heads), head_view(k_g, num_heads), head_view(v_g, num_heads), scale=scale)
    return merge_head_view(out, batch), lse


def _flash_backward(grad_out, q, k, v, index, out, lse, num_heads, n_win, scale, grads):
    """One chunk of the backward: re-gather, run the flash backward kernel, index-add into the source tokens.

    Writes dq, dk, dv into ``grads``, three contiguous (b, H, W, C*) tensors.
    """
    batch, height, width, _ = q.shape
    n_regions = n_win * n_win
    q_rows = query_token_index(batch, height, width, n_win, q.device)
    kv_rows = routed_token_index(index, height, width, n_win)
    q_r, grad_out_r, out_r = (gather_tokens(t, q_rows, n_regions) for t in (q, grad_out, out))  # (b, S^2, n, C*)
    k_g, v_g = gather_tokens(k, kv_rows, n_regions), gather_tokens(v, kv_rows, n_regions)  # (b, S^2, topk*n, C*)
    heads = [head_view(t, num_heads) for t in (grad_out_r, q_r, k_g, v_g, out_r)]
    grad_q, grad_kg, grad_vg = _FLASH_CPU_BACKWARD(*heads, lse, 0.0, False, scale=scale)  # (b*S^2, heads, L, d)
    grad_q_dest, grad_k_dest, grad_v_dest = grads
    write_regions(grad_q_dest, merge_head_view(grad_q, batch), n_win)
    # Every gathered token came from one source token: add its gradient back there (tokens repeat across regions).
    for dest, grad_g in ((grad_k_dest, grad_kg), (grad_v_dest, grad_vg)):
        rows = token_rows(dest)  # (b*H*W, C), a view of dest
        rows.zero_().index_add_(0, kv_rows, merge_head_view(grad_g, batch).reshape(-1, rows.shape[-1]))


def _recompute_backward(grad_out, q, k, v, index, num_heads, n_win, scale, grads):
    """One chunk of the backward by recomputation: autograd through the sdpa backend (index_select -> index_add)."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out = sdpa_regions(*leaves, index, num_heads=num_heads, n_win=n_win, scale=scale)  # (b, S^2, n, Cv)
        grad_out_r = gather_tokens(grad_out, query_token_index(*q.shape[:3], n_win, q.device), n_win * n_win)
        for dest, grad in zip(grads, torch.autograd.grad(out, leaves, grad_out_r), strict=True):
            dest.copy_(grad)


def lean_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    scale: float,
    strategy: str = "auto",
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv).

    ``strategy``: ``"auto"`` (flash where :func:`flash_applies`, else recompute), ``"flash"`` or
    ``"recompute"``; see the module docstring.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        strategy = "flash" if flash_applies(q, v, num_heads) else "recompute"
    elif strategy == "flash" and not flash_applies(q, v, num_heads):
        raise ValueError(
            "strategy='flash' needs a CPU tensor of dtype float16/bfloat16/float32/float64 with Cqk == Cv "
            f"(got {q.device.type}, {q.dtype}, Cqk={q.shape[-1]}, Cv={v.shape[-1]}); use 'recompute' or 'auto'"
        )
    return LeanRegionAttention.apply(q, k, v, index, num_heads, n_win, scale, strategy)
