"""How much BRA costs: multiply-adds counted from a real forward, and derived symbolically with sympy.

Convention: one multiply-add = 1 FLOP (the paper's and fvcore's); see :mod:`bralib.complexity.counting`.

``import bralib.complexity`` stays cheap: sympy is imported by :mod:`bralib.complexity.symbolic` (and
numpy fits by :mod:`bralib.complexity.scaling`) only when one of their names is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from bralib.complexity.counting import count_flops, count_flops_by_module, flop_counter

_LAZY: dict[str, str] = {
    **{name: "bralib.complexity.symbolic" for name in (
        "PAPER_MINIMAL_FLOPS", "PAPER_OPTIMAL_REGIONS", "am_gm_minimum", "bra_flops", "bra_terms", "evaluate",
        "full_attention_flops", "full_attention_terms", "growth_exponent", "in_tokens", "minimal_flops",
        "optimal_regions", "paper_bra_flops", "window_attention_flops", "window_attention_terms",
    )},
    **{name: "bralib.complexity.scaling" for name in (
        "ScalingSeries", "counted_bra_macs", "counted_window_macs", "loglog_slope", "optimal_regions_value",
        "scaling_fixed_regions", "scaling_optimal_regions", "scaling_window",
    )},
}  # fmt: skip

__all__ = ["count_flops", "count_flops_by_module", "flop_counter", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bralib.complexity' has no attribute {name!r}; available: {sorted(__all__)}")
    return getattr(importlib.import_module(_LAZY[name]), name)
