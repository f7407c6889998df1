"""The lean backend: the gather's algorithm with O(HW*C) saved activations and an index-add backward.

Autograd through any gather keeps the gathered keys and values (k copies of K and V) alive until the
backward. :class:`LeanRegionAttention` saves only what the backward cannot cheaply rebuild — q, k, v, the
routing index, the output and the softmax statistics (one log-sum-exp per query and head) — and in the
backward re-gathers the routed tokens (a row copy, cheap next to attention) and accumulates the key and value
gradients into their source tokens with ``index_add_`` by the same rows.

Two ways to compute it:

* ``"flash"`` (CPU, equal q/v head widths): ATen's CPU flash-attention kernel, which returns the log-sum-exp,
  and its backward kernel, called directly — no recomputation of the forward. The work runs in chunks of
  regions whose gathered keys and values take about ``CPU_REGION_CHUNK_BYTES`` (1 MiB, a few dozen regions):
  a chunk's gathered tokens are still in the core's cache when the attention kernel reads them, and the
  k-times gathered keys and values never exist for more than one chunk. With one thread this measured
  faster than whole-image chunks at every BiFormer stage (and much faster than one chunk for the batch).
* ``"recompute"`` (every other device, or Cqk != Cv per head): the forward runs the sdpa backend without
  autograd; the backward re-runs it under autograd and differentiates it, in chunks of images on CPU
  (``CPU_CHUNK_BYTES``) and for the whole batch elsewhere. Public operators only, so it is correct wherever
  SDPA is; it pays one extra forward in the backward.
"""

from __future__ import annotations

import torch

from bralib.ops.amp import autocast_off
from bralib.ops.backends.layout import (
    gather_tokens,
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

# Bytes of gathered keys + values per chunk on CPU: images per chunk for "recompute", regions per chunk for
# "flash" (cache-sized; measured with one thread on the 2-core build machine, see benchmarks/README.md).
CPU_CHUNK_BYTES = 64 * 1024 * 1024
CPU_REGION_CHUNK_BYTES = 1024 * 1024


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
        out = q.new_empty(v.shape)  # (B, H, W, Cv)
        lse = None
        with autocast_off(q.device):  # compute in the inputs' dtype
            if strategy == "flash":
                lse = _flash_forward(q, k, v, index, num_heads, n_win, scale, out)  # (B*S^2, heads, n)
            else:
                chunk = chunk_images(q, v, index.shape[-1], n_win)
                for start in range(0, q.shape[0], chunk):
                    part = slice(start, start + chunk)
                    out_regions = sdpa_regions(q[part], k[part], v[part], index[part], num_heads=num_heads,
                                               n_win=n_win, scale=scale)  # fmt: skip
                    write_regions(out[part], out_regions, n_win)
        if strategy == "flash":
            ctx.save_for_backward(q, k, v, index, out, lse)
        else:
            ctx.save_for_backward(q, k, v, index)
        ctx.config = (num_heads, n_win, scale, strategy)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        num_heads, n_win, scale, strategy = ctx.config
        saved = ctx.saved_tensors  # read once: torch.utils.checkpoint allows one unpack per saved tensor
        q, k, v, index = saved[:4]
        grad_out = grad_out.contiguous()
        with autocast_off(q.device):
            if strategy == "flash":
                out, lse = saved[4:]
                grads = _flash_backward(grad_out, q, k, v, index, out, lse, num_heads, n_win, scale)
            else:
                grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
                chunk = chunk_images(q, v, index.shape[-1], n_win)
                for start in range(0, q.shape[0], chunk):
                    part = slice(start, start + chunk)
                    inputs = (grad_out[part], q[part], k[part], v[part], index[part])
                    _recompute_backward(*inputs, num_heads, n_win, scale, [g[part] for g in grads])
        grads = tuple(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad[:3], strict=True))
        return (*grads, None, None, None, None, None)


def regions_per_chunk(q: torch.Tensor, v: torch.Tensor, topk: int, n_win: int) -> int:
    """Regions per chunk of the flash strategy: enough that the gathered keys and values fill CPU_REGION_CHUNK_BYTES."""
    tokens_per_region = q.shape[1] * q.shape[2] // (n_win * n_win)
    gathered_bytes = topk * tokens_per_region * (q.shape[-1] + v.shape[-1]) * q.element_size()  # per region
    return max(1, CPU_REGION_CHUNK_BYTES // gathered_bytes)


def _token_rows(q: torch.Tensor, index: torch.Tensor, n_win: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Query rows in region-major order, routed key/value rows, tokens per region, routed tokens per region."""
    batch, height, width, _ = q.shape
    q_rows = query_token_index(batch, height, width, n_win, q.device)  # (B*S^2*n,)
    kv_rows = routed_token_index(index, height, width, n_win)  # (B*S^2*topk*n,)
    tokens = height * width // (n_win * n_win)
    return q_rows, kv_rows, tokens, index.shape[-1] * tokens


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(R, L, C) -> (R, heads, L, C/heads), a view."""
    regions, length, channels = x.shape
    return x.view(regions, length, num_heads, channels // num_heads).transpose(1, 2)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(R, heads, L, d) -> (R*L, heads*d): the inverse of :func:`_heads` (a view when the memory allows it)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1] * x.shape[3])


def _chunks(q_rows: torch.Tensor, kv_rows: torch.Tensor, n: int, routed: int, per: int):
    """(regions, query rows, routed key/value rows) of every chunk of ``per`` regions (the last may be short)."""
    total = q_rows.numel() // n
    sizes = [min(per, total - first) for first in range(0, total, per)]
    return sizes, q_rows.split([size * n for size in sizes]), kv_rows.split([size * routed for size in sizes])


def _gather_into(buffer: torch.Tensor, source: torch.Tensor, rows: torch.Tensor, regions: int) -> torch.Tensor:
    """Rows ``rows`` of ``source`` (N, C) copied into the front of ``buffer``, as (regions, len(rows)/regions, C).

    One buffer per operand serves every chunk, so the gathered tokens land in memory that is already in cache.
    """
    gathered = torch.index_select(source, 0, rows, out=buffer[: rows.numel()])
    return gathered.view(regions, rows.numel() // regions, source.shape[-1])


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the flash kernel's log-sum-exp: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flash_forward(q, k, v, index, num_heads, n_win, scale, out):
    """Write the attention output into ``out`` (B, H, W, Cv), chunk by chunk of regions; return lse (B*S^2, heads, n).

    A chunk holds a few dozen regions, so its gathered queries, keys and values stay in the core's cache
    between the gather and the attention kernel that reads them.
    """
    q_rows, kv_rows, n, routed = _token_rows(q, index, n_win)
    per = min(regions_per_chunk(q, v, index.shape[-1], n_win), q_rows.numel() // n)  # buffers no larger than needed
    sizes, q_chunks, kv_chunks = _chunks(q_rows, kv_rows, n, routed, per)
    sources = [token_rows(t) for t in (q, k, v)]  # (B*H*W, C*): views
    buffers = [t.new_empty((per * length, t.shape[-1])) for t, length in ((q, n), (k, routed), (v, routed))]
    # Region-major results, written chunk by chunk as contiguous slices, then put back into the map in one
    # strided copy: faster than scattering every chunk's rows into the map.
    out_regions = out.new_empty((q_rows.numel(), out.shape[-1]))  # (B*S^2*n, Cv)
    lse = torch.empty((q_rows.numel() // n, num_heads, n), dtype=_lse_dtype(q.dtype), device=q.device)
    out_chunks, lse_chunks = out_regions.split([size * n for size in sizes]), lse.split(sizes)
    for size, rows_q, rows_kv, out_chunk, lse_chunk in zip(
        sizes, q_chunks, kv_chunks, out_chunks, lse_chunks, strict=True
    ):
        q_r, k_g, v_g = (
            _heads(_gather_into(buffer, source, rows, size), num_heads)
            for buffer, source, rows in zip(buffers, sources, (rows_q, rows_kv, rows_kv), strict=True)
        )  # (R, heads, n | topk*n, d)
        out_r, lse_r = _FLASH_CPU(q_r, k_g, v_g, scale=scale)  # (R, heads, n, dv), (R, heads, n)
        out_chunk.copy_(_rows(out_r))
        lse_chunk.copy_(lse_r)
    write_regions(out, out_regions.view(q.shape[0], n_win * n_win, n, -1), n_win)
    return lse


def _flash_backward(grad_out, q, k, v, index, out, lse, num_heads, n_win, scale):
    """dq, dk, dv chunk by chunk of regions: re-gather, run the flash backward kernel, index-add into source tokens.

    Every gathered key or value token came from one source token, and a token is gathered by every region
    that routes to its region: ``index_add_`` sums those contributions, where ``grad[rows] = g`` would keep one.
    """
    q_rows, kv_rows, n, routed = _token_rows(q, index, n_win)
    per = min(regions_per_chunk(q, v, index.shape[-1], n_win), q_rows.numel() // n)  # buffers no larger than needed
    sizes, q_chunks, kv_chunks = _chunks(q_rows, kv_rows, n, routed, per)
    # Contiguous on purpose: token_rows() of them must be views, since the results are written through them.
    grad_q = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    grad_k, grad_v = (torch.zeros(t.shape, dtype=t.dtype, device=t.device) for t in (k, v))
    dest_k, dest_v = token_rows(grad_k), token_rows(grad_v)
    sources = [token_rows(t) for t in (grad_out, q, out, k, v)]  # (B*H*W, C*) views
    lengths = (n, n, n, routed, routed)
    buffers = [
        t.new_empty((per * length, t.shape[-1])) for t, length in zip((grad_out, q, out, k, v), lengths, strict=True)
    ]
    grad_q_regions = q.new_empty((q_rows.numel(), q.shape[-1]))  # (B*S^2*n, Cqk) region-major, as in the forward
    grad_q_chunks, lse_chunks = grad_q_regions.split([size * n for size in sizes]), lse.split(sizes)
    for size, rows_q, rows_kv, grad_q_chunk, lse_chunk in zip(
        sizes, q_chunks, kv_chunks, grad_q_chunks, lse_chunks, strict=True
    ):
        go_r, q_r, out_r, k_g, v_g = (
            _heads(_gather_into(buffer, source, rows, size), num_heads)
            for buffer, source, rows in zip(buffers, sources, (rows_q, rows_q, rows_q, rows_kv, rows_kv), strict=True)
        )  # (R, heads, n | topk*n, d)
        dq, dk, dv = _FLASH_CPU_BACKWARD(go_r, q_r, k_g, v_g, out_r, lse_chunk, 0.0, False, scale=scale)
        grad_q_chunk.copy_(_rows(dq))
        dest_k.index_add_(0, rows_kv, _rows(dk))
        dest_v.index_add_(0, rows_kv, _rows(dv))
    write_regions(grad_q, grad_q_regions.view(q.shape[0], n_win * n_win, n, -1), n_win)
    return grad_q, grad_k, grad_v


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
