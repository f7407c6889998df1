"""The triton backend: one fused kernel per pass that reads the routed key/value regions by index.

Every other backend that does not use the dense mask writes the gathered keys and values somewhere: k copies
of K and V per call (``gather``, ``sdpa``), or a cache-sized chunk at a time (``lean``). Here a program of
the forward kernel owns a tile of query tokens and one head, reads the routing index, and loads each routed
region's keys and values straight from the (B, H, W, C) maps into on-chip memory, running an online softmax
over them (flash-attention style). Nothing the size of the gathered set is ever written. The kernels are in
:mod:`bralib.ops.kernels.routed_attention` (their docstring explains the tiles, the masks and the packing of
small regions: BiFormer's stage 3 puts four 4-token regions in one 16-row tile).

The backward is FlashAttention-2's, in two kernels. ``dq`` walks the routing like the forward. ``dk``/``dv``
use the *transposed* routing: for every key region, the list of query regions that chose it, built once per
call from the index with a stable sort and a bincount (B * S^2 * topk small integers). A program owns a tile
of key tokens and walks its choosers, so every dK/dV row is written by exactly one program. The alternative,
atomics from the dq pass, was not chosen: it needs float32 accumulation buffers for half-precision inputs, its
summation order (so its result) changes from run to run, and popular key regions (chosen by many regions)
serialise on the same addresses; the sort costs microseconds.

Saved for the backward: q, k, v, the routing index (as int32), the output and one float32 log-sum-exp per query
and head: no more than ``lean``'s "flash" strategy (a test counts them). The forward and the backward are
PyTorch custom operators with autograd registered (``torch.library``), so ``torch.compile`` sees one opaque
operator per BRA call instead of tracing into the kernel launches.

A region repeated in a row of the routing index counts once, as in the reference's token mask (the index is a
set of regions); the launcher marks the repeats before the kernels see them.

Where it runs. ``triton`` is an optional package (the ``[dev]`` extra installs it on Linux x86-64):
``import bralib`` and every other backend work without it, and this backend then says why it cannot run.
On CUDA the kernels are compiled. On CPU they run only in Triton's interpreter (``TRITON_INTERPRET=1`` set
before the first call in the process): slow, for tests and for the book, never chosen by ``"auto"``.
Float32 dots use IEEE precision (no TF32), like PyTorch's default matmuls; LCE and routing stay outside.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import ModuleType

import torch

from bralib.ops.amp import autocast_off

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DEVICES = ("cuda", "cpu")  # cpu: Triton's interpreter only
MIN_ROWS = 16  # tl.dot needs at least 16 rows and columns: smaller regions are packed (or padded) to 16
MAX_ROWS = 64  # query (and key) rows of one region per step; larger regions are cut into chunks
KEY_BLOCK = 64  # key columns per step: routed slots are batched until a step holds about this many keys
_TRUE = ("1", "true", "on", "yes", "y")  # what triton itself reads as true in TRITON_INTERPRET


@dataclass(frozen=True)
class Tiling:
    """How query (and key) tokens are cut into program tiles, and routed keys into steps.

    regions: regions packed in one tile (G); rows: rows of each region per tile (a power of two);
    chunks: tiles per region group (regions larger than ``rows`` tokens); key_rows: tokens of one routed
    region per step; slots: routed regions per step.
    """

    regions: int
    rows: int
    chunks: int
    key_rows: int
    slots: int

    @property
    def block_m(self) -> int:
        return self.regions * self.rows

    @property
    def block_n(self) -> int:
        return self.regions * self.slots * self.key_rows

    def tiles(self, n_regions: int) -> int:
        return -(-n_regions // self.regions) * self.chunks


def next_power_of_2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()


def tiling_for(tokens_per_region: int, topk: int, *, regions_per_tile: int | None = None) -> Tiling:
    """The tiling of a request: small regions packed into 16-row tiles, large ones cut into 64-row chunks.

    ``regions_per_tile`` overrides the packing (a power of two; 1 pads every region to its own tile).
    BiFormer at 224x224: 64-token regions -> 1 x 64 rows, one routed region per step; 16-token regions
    -> 1 x 16 rows, 4 routed regions (64 keys) per step; 4-token regions -> 4 regions x 4 rows, 4 routed
    regions of each per step.
    """
    n_pad = next_power_of_2(tokens_per_region)
    if regions_per_tile is None:
        regions_per_tile = max(1, MIN_ROWS // n_pad)
    if regions_per_tile < 1 or regions_per_tile & (regions_per_tile - 1):
        raise ValueError(f"regions_per_tile must be a power of two >= 1, got {regions_per_tile}")
    if regions_per_tile > 1 and regions_per_tile * n_pad < MIN_ROWS:
        raise ValueError(
            f"regions_per_tile={regions_per_tile} of {tokens_per_region}-token regions fills fewer than {MIN_ROWS} "
            f"rows; use 1 (padded) or at least {MIN_ROWS // n_pad}"
        )
    rows = n_pad if regions_per_tile > 1 else min(max(n_pad, MIN_ROWS), MAX_ROWS)
    key_rows = min(n_pad, MAX_ROWS)
    per_slot = regions_per_tile * key_rows
    slots = min(next_power_of_2(topk), max(1, KEY_BLOCK // per_slot))
    slots = max(slots, -(-MIN_ROWS // per_slot))  # at least 16 key columns per step (powers of two: exact)
    return Tiling(regions_per_tile, rows, -(-tokens_per_region // rows), key_rows, slots)


# ---------------------------------------------------------------- availability (triton is optional)


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def triton_problem(device_type: str) -> str | None:
    """Why the triton backend cannot run on this device type in this process, or None when it can."""
    if device_type not in DEVICES:
        return f"runs on cuda (and on cpu in Triton's interpreter), not {device_type}"
    try:
        importlib.import_module("triton")
    except ImportError as err:
        return f"needs the 'triton' package, which is not importable here ({err}); pip install triton (Linux x86-64)"
    if device_type == "cpu":
        loaded = _loaded_kernels()
        if loaded is not None and not _interpreted(loaded):
            return (
                "its kernels were compiled for the GPU in this process; CPU needs TRITON_INTERPRET=1 before first use"
            )
        if loaded is None and not _interpret_env():
            return "runs on CPU only in Triton's interpreter: set TRITON_INTERPRET=1 before the first call (slow)"
    return None


def _loaded_kernels() -> ModuleType | None:
    import sys

    return sys.modules.get("bralib.ops.kernels.routed_attention")


def _interpreted(module: ModuleType) -> bool:
    """Whether triton.jit decorated the kernels for its interpreter, read off a kernel (any triton version)."""
    if not hasattr(module, "INTERPRETED"):
        module.INTERPRETED = type(module._fwd_kernel).__name__ == "InterpretedFunction"
    return module.INTERPRETED


def _kernels() -> ModuleType:
    """The kernels module; importing it decorates the kernels, compiled or interpreted per TRITON_INTERPRET."""
    module = importlib.import_module("bralib.ops.kernels.routed_attention")
    _interpreted(module)
    return module


# ---------------------------------------------------------------- routing, as the kernels read it


def unique_routing(index: torch.Tensor) -> torch.Tensor:
    """(B, S*S, topk) long -> (B, S*S, topk) int32 in ascending order per row, repeats replaced by -1.

    Sorted: neighbouring slots then read neighbouring memory. A repeated region counts once, as in the
    reference's token mask.
    """
    ordered = index.sort(dim=-1).values
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[..., 1:] = ordered[..., 1:] == ordered[..., :-1]
    return ordered.masked_fill(repeat, -1).to(torch.int32).contiguous()


def transposed_routing(routing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every key region, the query regions that chose it: a CSR list built with one sort and a bincount.

    Args:
        routing: (B, S*S, topk) int32 from :func:`unique_routing` (-1 = a repeat, skipped).

    Returns:
        starts, counts: (B*S*S,) int32; choosers: (number of real slots,) int32 query-region numbers:
        key region r' of image b is chosen by ``choosers[starts[i]:starts[i] + counts[i]]``, i = b*S*S + r'.
    """
    batch, n_regions, topk = routing.shape
    flat = routing.reshape(-1).long()
    real = flat >= 0
    slot_ids = torch.arange(flat.numel(), device=routing.device)
    image = slot_ids // (n_regions * topk)
    key = (image * n_regions + flat)[real]  # (real slots,) key region, numbered across the batch
    chooser = ((slot_ids // topk) % n_regions)[real]  # the query region of every real slot
    order = torch.sort(key, stable=True).indices  # stable: choosers in ascending order, deterministic
    counts = torch.bincount(key, minlength=batch * n_regions)
    starts = torch.cumsum(counts, 0) - counts
    return starts.to(torch.int32), counts.to(torch.int32), chooser[order].to(torch.int32).contiguous()


# ---------------------------------------------------------------- launchers


def _channels_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The kernels address tokens by strides but need each token's channels contiguous."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _geometry(q: torch.Tensor, v: torch.Tensor, num_heads: int, n_win: int, topk: int, tiling: Tiling | None):
    """Region size, tiling, the kernels' compile-time constants, and the launch grid (B * heads, tiles)."""
    batch, height, width, c_qk = q.shape
    region_h, region_w = height // n_win, width // n_win
    tiling = tiling_for(region_h * region_w, topk) if tiling is None else tiling
    d, dv = c_qk // num_heads, v.shape[-1] // num_heads
    constants = dict(
        D=d, DV=dv, D_PAD=max(MIN_ROWS, next_power_of_2(d)), DV_PAD=max(MIN_ROWS, next_power_of_2(dv)),
        G=tiling.regions, ROWS=tiling.rows, KEY_ROWS=tiling.key_rows, SLOTS=tiling.slots,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        # Triton's interpreter gets bfloat16 arithmetic wrong (numpy has no bfloat16): widen it to float32 there.
        WIDEN=q.dtype == torch.bfloat16 and _kernels().INTERPRETED,
    )  # fmt: skip
    grid = (batch * num_heads, tiling.tiles(n_win * n_win))
    return region_h, region_w, tiling, constants, grid


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _on(device: torch.device) -> AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensors' one."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def routed_forward(q, k, v, routing, num_heads: int, n_win: int, scale: float, tiling: Tiling | None = None):
    """Launch the forward: (out (B, H, W, Cv), lse (B, heads, H, W) float32). ``routing`` from unique_routing."""
    batch, height, width, _ = q.shape
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    lse = torch.empty((batch, num_heads, height, width), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    region_h, region_w, tiling, constants, grid = _geometry(q, v, num_heads, n_win, routing.shape[-1], tiling)
    with _on(q.device):
        _kernels()._fwd_kernel[grid](
            q, k, v, out, lse, routing, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            num_heads, n_win, region_h, region_w, routing.shape[-1], tiling.chunks, scale * math.log2(math.e),
            **constants,
        )  # fmt: skip
    return out, lse


def routed_backward(grad_out, q, k, v, routing, out, lse, num_heads: int, n_win: int, scale: float, tiling=None):
    """Launch the two backward kernels: (dq, dk, dv), contiguous, in the inputs' dtype."""
    batch, height, width, _ = q.shape
    grad_q, grad_k, grad_v = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    if grad_out.numel() == 0:
        return grad_q, grad_k, grad_v
    region_h, region_w, tiling, constants, grid = _geometry(q, v, num_heads, n_win, routing.shape[-1], tiling)
    delta = torch.empty_like(lse)  # rowsum(dO * O) per query and head: written by the dq kernel, read by dk/dv
    kernels = _kernels()
    geometry = (num_heads, n_win, region_h, region_w)
    starts, counts, choosers = transposed_routing(routing)
    with _on(q.device):
        kernels._dq_kernel[grid](
            q, k, v, grad_out, out, lse, delta, grad_q, routing,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), *_strides(out),
            *geometry, routing.shape[-1], tiling.chunks, scale, scale * math.log2(math.e), **constants,
        )  # fmt: skip
        kernels._dkv_kernel[grid](
            q, k, v, grad_out, lse, delta, grad_k, grad_v, starts, counts, choosers,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out),
            *geometry, tiling.chunks, scale, scale * math.log2(math.e), **constants,
        )  # fmt: skip
    return grad_q, grad_k, grad_v


# ---------------------------------------------------------------- the operator and its autograd
#
# Registered as PyTorch custom operators (forward and backward), with shape-only "fake" versions: torch.compile
# then treats a BRA call as one opaque operator instead of tracing into the Triton launches, and autograd
# saves exactly what ``_setup_context`` saves.


def _as_tiling(tiling: list[int]) -> Tiling | None:
    return Tiling(*tiling) if tiling else None


@torch.library.custom_op("bralib::triton_routed_attention", mutates_args=())
def _attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routing: torch.Tensor, num_heads: int, n_win: int,
    scale: float, tiling: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(out (B, H, W, Cv), lse (B, heads, H, W) float32)."""
    with autocast_off(q.device):
        return routed_forward(q, k, v, routing, num_heads, n_win, scale, _as_tiling(tiling))


@_attention_op.register_fake
def _attention_shapes(q, k, v, routing, num_heads, n_win, scale, tiling):
    lse = q.new_empty((q.shape[0], num_heads, q.shape[1], q.shape[2]), dtype=torch.float32)
    return v.new_empty(v.shape), lse


@torch.library.custom_op("bralib::triton_routed_attention_backward", mutates_args=())
def _attention_backward_op(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routing: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, num_heads: int, n_win: int, scale: float, tiling: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(dq, dk, dv), contiguous."""
    with autocast_off(q.device):
        return routed_backward(grad_out, q, k, v, routing, out, lse, num_heads, n_win, scale, _as_tiling(tiling))


@_attention_backward_op.register_fake
def _attention_backward_shapes(grad_out, q, k, v, routing, out, lse, num_heads, n_win, scale, tiling):
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, routing, num_heads, n_win, scale, tiling = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, routing, out, lse)  # the int32 routing is half the size of the int64 index
    ctx.config = (num_heads, n_win, scale, tiling)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, routing, out, lse = ctx.saved_tensors
    grads = _attention_backward_op(_channels_contiguous(grad_out), q, k, v, routing, out, lse, *ctx.config)
    grads = tuple(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad[:3], strict=True))
    return (*grads, None, None, None, None, None)


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    scale: float,
    tiling: Tiling | None = None,
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv).

    ``tiling``: override :func:`tiling_for`'s choice (tests use it to run packed and unpacked tiles).
    """
    # Checked eagerly; under torch.compile the operator is opaque and the checks (imports, env) are not traced.
    problem = None if torch.compiler.is_compiling() else triton_problem(q.device.type)
    if problem is None and q.dtype not in DTYPES:
        problem = f"supports float16, bfloat16, float32, not {str(q.dtype).replace('torch.', '')}"
    if problem is not None:
        raise RuntimeError(f"backend 'triton' cannot run this request: {problem}. Use 'lean', 'sdpa' or 'auto'.")
    q, k, v = (_channels_contiguous(t) for t in (q, k, v))
    tiling_ints = [] if tiling is None else list(dataclasses.astuple(tiling))
    out, _ = _attention_op(q, k, v, unique_routing(index), num_heads, n_win, scale, tiling_ints)
    return out
