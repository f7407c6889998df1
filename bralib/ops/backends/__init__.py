"""BRA backends: interchangeable ways to compute token attention over the routed regions.

Each backend is a function ``fn(q, k, v, index, *, num_heads, n_win, scale) -> out`` with q, k:
(B, H, W, Cqk), v: (B, H, W, Cv), index: (B, S*S, topk), out: (B, H, W, Cv). They agree numerically
and differ in speed and memory. ``bralib.ops.bra(..., backend=name)`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bralib.ops.backends.gather import gather_attention
from bralib.ops.backends.reference import reference_attention


@dataclass(frozen=True)
class Backend:
    """A registered backend and what it can do."""

    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    supports_backward: Callable[[torch.device], bool] = lambda device: True


BACKENDS: dict[str, Backend] = {
    "reference": Backend("reference", reference_attention, "dense attention with the routed-region token mask"),
    "gather": Backend("gather", gather_attention, "the paper's algorithm: gather k regions, batched matmuls"),
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    return BACKENDS[name]


def choose_backend(q: torch.Tensor, v: torch.Tensor, *, n_win: int, topk: int, needs_grad: bool) -> str:
    """The backend ``"auto"`` uses for this request."""
    return "gather"
