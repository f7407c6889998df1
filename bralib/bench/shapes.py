"""The shapes a BRA call sees inside BiFormer at 224x224, and custom ones from the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StageShape:
    """One BRA call: (batch, height, width, dim) maps with ``num_heads`` heads, S = ``n_win``, ``topk``."""

    label: str
    batch: int
    height: int
    width: int
    dim: int
    num_heads: int
    topk: int
    n_win: int = 7

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def tokens_per_region(self) -> int:
        return self.tokens // (self.n_win * self.n_win)

    def describe(self) -> str:
        return (
            f"{self.label} ({self.height}x{self.width}, C={self.dim}, {self.num_heads} heads, topk={self.topk}, "
            f"{self.tokens_per_region}-token regions, B={self.batch})"
        )

    def key(self) -> tuple:
        return (self.batch, self.height, self.width, self.dim, self.num_heads, self.topk, self.n_win)


# (tokens per side, dim, heads, topk) of BRA stages 1-3 at 224x224; stage 4 is global attention, not BRA.
# BiFormer-T and -S share these shapes (they differ in depth only).
STAGES = {
    "biformer-t": ((56, 64, 2, 1), (28, 128, 4, 4), (14, 256, 8, 16)),
    "biformer-s": ((56, 64, 2, 1), (28, 128, 4, 4), (14, 256, 8, 16)),
    "biformer-b": ((56, 96, 3, 1), (28, 192, 6, 4), (14, 384, 12, 16)),
}
NAMES = {"biformer-t": "BiFormer-T", "biformer-s": "BiFormer-S", "biformer-b": "BiFormer-B"}
CUSTOM = re.compile(r"^(\d+)x(\d+):(\d+):(\d+):(\d+)(?::(\d+))?$")
CUSTOM_HELP = "HxW:C:heads:topk[:n_win], e.g. 28x28:128:4:4 (n_win defaults to 7)"


def preset_shapes(preset: str, batch: int) -> list[StageShape]:
    if preset not in STAGES:
        raise ValueError(f"unknown shape preset {preset!r}; known: {', '.join(STAGES)}, or custom ({CUSTOM_HELP})")
    return [
        StageShape(f"{NAMES[preset]} stage {i}", batch, side, side, dim, heads, topk)
        for i, (side, dim, heads, topk) in enumerate(STAGES[preset], start=1)
    ]


def parse_custom(text: str, batch: int) -> StageShape:
    match = CUSTOM.match(text)
    if not match:
        raise ValueError(f"custom shape {text!r} is not {CUSTOM_HELP}")
    height, width, dim, heads, topk, n_win = (int(g) if g else None for g in match.groups())
    n_win = 7 if n_win is None else n_win
    if height % n_win or width % n_win:
        raise ValueError(f"custom shape {text!r}: H and W must be multiples of n_win={n_win}")
    if dim % heads:
        raise ValueError(f"custom shape {text!r}: heads={heads} must divide C={dim}")
    if not 1 <= topk <= n_win * n_win:
        raise ValueError(f"custom shape {text!r}: topk must be in [1, n_win**2] = [1, {n_win * n_win}]")
    return StageShape(f"custom {height}x{width}", batch, height, width, dim, heads, topk, n_win)


def merge_duplicates(shapes: list[StageShape]) -> list[StageShape]:
    """One entry per distinct shape; labels of shapes that coincide are joined ("BiFormer-T/S stage 1")."""
    merged: dict[tuple, StageShape] = {}
    for shape in shapes:
        if shape.key() in merged:
            first = merged[shape.key()]
            model, _, rest = shape.label.partition(" stage ")
            if model not in first.label:
                head, _, tail = first.label.partition(" stage ")
                merged[shape.key()] = replace(first, label=f"{head}/{model.replace('BiFormer-', '')} stage {tail}")
        else:
            merged[shape.key()] = shape
    return list(merged.values())
