"""BRA backends: interchangeable ways to compute token attention over the routed regions.

Each backend is a function ``fn(q, k, v, index, *, num_heads, n_win, scale) -> out`` with q, k:
(B, H, W, Cqk), v: (B, H, W, Cv), index: (B, S*S, topk), out: (B, H, W, Cv). They agree numerically
and differ in speed and memory. ``bralib.ops.bra(..., backend=name)`` picks one; ``backend="auto"`` picks
from measurements stored in ``measured.json`` (see :mod:`bralib.ops.backends.auto` and ``bralib bench``).

========== ===================================================================================
reference  dense attention over all tokens with the routed-region mask: slow, obviously right
gather     the paper's algorithm: gather k regions per region, batched matmuls (the baseline)
sdpa       whole-region gathers + PyTorch's fused scaled_dot_product_attention
dense      fused SDPA over all tokens with the routed-region mask (wins for tiny regions)
lean       gather + fused attention whose saved activations are O(HW*C), index-add backward
flex       FlexAttention with one block per routed region (compiled; forward only on CPU)
triton     fused Triton kernels that read the routed regions by index, nothing gathered (CUDA;
           on CPU only in Triton's interpreter, for tests); needs the optional ``triton`` package
========== ===================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bralib.ops.backends.dense import dense_attention
from bralib.ops.backends.flex import DEVICE_DTYPES as FLEX_DTYPES
from bralib.ops.backends.flex import flex_attention_backend
from bralib.ops.backends.gather import gather_attention
from bralib.ops.backends.lean import lean_attention
from bralib.ops.backends.reference import reference_attention
from bralib.ops.backends.sdpa import sdpa_attention
from bralib.ops.backends.triton import DEVICES as TRITON_DEVICES
from bralib.ops.backends.triton import DTYPES as TRITON_DTYPES
from bralib.ops.backends.triton import triton_attention, triton_problem

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Backend:
    """A registered backend and what it can do.

    Attributes:
        devices: device types it runs on; None for any device PyTorch runs on.
        dtypes: dtypes it computes in, per device type (``"*"``: every other device).
        forward_only_on: device types where it has no backward.
        needs_compile: it runs through ``torch.compile`` (its first call per shape compiles for seconds).
        available: why it cannot run on a device type in this process (a missing optional package, an
            environment switch), or None; asked before anything else.
        auto_devices: device types ``"auto"`` may pick it on; None for every device it runs on.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    devices: tuple[str, ...] | None = None
    dtypes: tuple[tuple[str, tuple[torch.dtype, ...]], ...] = (("*", FLOAT_DTYPES),)
    forward_only_on: tuple[str, ...] = ()
    needs_compile: bool = False
    available: Callable[[str], str | None] | None = None
    auto_devices: tuple[str, ...] | None = None

    def dtypes_on(self, device_type: str) -> tuple[torch.dtype, ...]:
        table = dict(self.dtypes)
        return table.get(device_type, table.get("*", ()))

    def problem(self, device_type: str, dtype: torch.dtype, needs_grad: bool) -> str | None:
        """Why this backend cannot run the request, or None when it can."""
        if self.devices is not None and device_type not in self.devices:
            return f"runs on {', '.join(self.devices)} only, not {device_type}"
        if self.available is not None and (why := self.available(device_type)) is not None:
            return why
        if dtype not in self.dtypes_on(device_type):
            allowed = ", ".join(_dtype_name(d) for d in self.dtypes_on(device_type))
            return f"supports {allowed} on {device_type}, not {_dtype_name(dtype)}"
        if needs_grad and device_type in self.forward_only_on:
            return f"has no backward on {device_type}"
        return None

    def supports_backward(self, device: torch.device | str) -> bool:
        return torch.device(device).type not in self.forward_only_on


BACKENDS: dict[str, Backend] = {
    "reference": Backend("reference", reference_attention, "dense attention with the routed-region token mask"),
    "gather": Backend("gather", gather_attention, "the paper's algorithm: gather k regions, batched matmuls"),
    "sdpa": Backend("sdpa", sdpa_attention, "whole-region gathers, then fused scaled_dot_product_attention"),
    "dense": Backend("dense", dense_attention, "fused SDPA over all tokens with the routed-region mask"),
    "lean": Backend("lean", lean_attention, "gather + fused attention, O(HW*C) saved activations, index-add backward"),
    "flex": Backend(
        "flex",
        flex_attention_backend,
        "FlexAttention, one block per routed region (compiled)",
        devices=tuple(FLEX_DTYPES),
        dtypes=tuple(FLEX_DTYPES.items()),
        forward_only_on=("cpu",),
        needs_compile=True,
    ),
    "triton": Backend(
        "triton",
        triton_attention,
        "fused Triton kernels, routed regions read by index (CUDA; CPU only in Triton's interpreter)",
        devices=TRITON_DEVICES,
        dtypes=(("*", TRITON_DTYPES),),
        available=triton_problem,
        auto_devices=("cuda",),  # and there only where a measured run says it is faster
    ),  # fmt: skip
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    return BACKENDS[name]


def choose_backend(q: torch.Tensor, v: torch.Tensor, *, n_win: int, topk: int, needs_grad: bool) -> str:
    """The backend ``"auto"`` uses for this request (see :func:`bralib.ops.explain_backend` for why)."""
    from bralib.ops.backends.auto import explain_choice

    return explain_choice(q, v, n_win=n_win, topk=topk, needs_grad=needs_grad).backend


__all__ = ["BACKENDS", "FLOAT_DTYPES", "Backend", "choose_backend", "get_backend"]
