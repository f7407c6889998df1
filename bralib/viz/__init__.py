"""Pictures and widgets: routing over images, complexity explorers, training curves.

Names are imported lazily from their modules so that ``import bralib`` stays light (matplotlib and
ipywidgets load only when a picture is drawn). Add ``"name": "bralib.viz.module"`` below to export one.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "plot_history": "bralib.viz.history",
    "draw_routing": "bralib.viz.routing",
    "draw_token_attention": "bralib.viz.routing",
    "draw_regions": "bralib.viz.routing",
    "draw_region_grid": "bralib.viz.routing",
    "region_box": "bralib.viz.routing",
    "sample_image": "bralib.viz.routing",
    "simple_features": "bralib.viz.routing",
    "explore_complexity": "bralib.viz.widgets",
    "explore_routing": "bralib.viz.widgets",
    "complexity_breakdown": "bralib.viz.widgets",
    "draw_complexity": "bralib.viz.widgets",
    "routing_view": "bralib.viz.widgets",
    "routing_features": "bralib.viz.widgets",
    "draw_routing_view": "bralib.viz.widgets",
    "draw_bra_levels": "bralib.viz.diagrams",
    "draw_gather_layout": "bralib.viz.diagrams",
    "draw_biformer_block": "bralib.viz.diagrams",
    "draw_biformer_pyramid": "bralib.viz.diagrams",
    "draw_roofline": "bralib.viz.diagrams",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bralib.viz' has no attribute {name!r}; available: {sorted(_EXPORTS)}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
