"""Counted multiply-adds of real BRA and window-attention layers, and log-log slopes against H*W.

The layers are the library's own :class:`bralib.ops.BiLevelRoutingAttention`, run under PyTorch's
``FakeTensorMode``: every operation of the forward executes on tensors that carry shapes but no data, so
maps of millions of tokens are counted in milliseconds without allocating them. The count is the same as a
real forward's (a test checks it on small shapes): the forward does the same operations at the same shapes.

Window attention is BRA with ``routing="local"`` and ``topk=1``: every region attends to itself only, which
is Swin's window attention with window side H / S (same qkv, LCE and output projection as BRA, and no
routing cost: local routing computes no adjacency).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from tqdm.auto import tqdm

from bralib.complexity.counting import count_flops
from bralib.ops.attention import BiLevelRoutingAttention

__all__ = [
    "ScalingSeries",
    "counted_bra_macs",
    "counted_window_macs",
    "loglog_slope",
    "optimal_regions_value",
    "scaling_fixed_regions",
    "scaling_optimal_regions",
    "scaling_window",
]


def counted_bra_macs(
    height: int,
    width: int,
    channels: int,
    n_win: int,
    topk: int,
    *,
    num_heads: int = 1,
    side_dwconv: int = 5,
    routing: str = "content",
    route_from: str = "x",
    fake: bool = True,
) -> int:
    """Multiply-adds of one ``BiLevelRoutingAttention(channels, ...)`` forward on a (1, height, width, channels) map.

    Uses the ``gather`` backend (the paper's algorithm: only the routed keys are multiplied). With
    ``fake=True`` the layer and input live in a FakeTensorMode (no memory, any size); ``fake=False`` runs a
    real forward on random data, seeded.
    """

    def build_and_count() -> int:
        layer = BiLevelRoutingAttention(
            channels, num_heads, n_win=n_win, topk=topk, side_dwconv=side_dwconv, backend="gather",
            routing=routing, route_from=route_from,
        )  # fmt: skip
        x = torch.randn(1, height, width, channels)  # (B, H, W, C)
        return count_flops(layer, x)

    if not fake:
        torch.manual_seed(0)
        return build_and_count()
    with FakeTensorMode(allow_non_fake_inputs=True):
        return build_and_count()


def counted_window_macs(side: int, channels: int, window: int, *, side_dwconv: int = 5, fake: bool = True) -> int:
    """Multiply-adds of window attention (window ``window`` x ``window``) on a side x side map, counted."""
    if side % window:
        raise ValueError(f"side={side} must be a multiple of window={window}")
    n_win = side // window
    return counted_bra_macs(side, side, channels, n_win, 1, side_dwconv=side_dwconv, routing="local", fake=fake)


def loglog_slope(tokens: Sequence[float], macs: Sequence[float]) -> float:
    """Least-squares slope of log(macs) against log(tokens): p in macs ~ tokens^p."""
    x, y = np.log(np.asarray(tokens, dtype=float)), np.log(np.asarray(macs, dtype=float))
    if x.size < 2:
        raise ValueError("a slope needs at least two points")
    return float(np.polyfit(x, y, 1)[0])


@dataclass
class ScalingSeries:
    """Counted multiply-adds over map sizes: ``tokens[i] = sides[i]**2``, ``macs[i]`` counted; one label."""

    label: str
    sides: list[int]
    n_wins: list[int]
    macs: list[int]

    @property
    def tokens(self) -> list[int]:
        return [side * side for side in self.sides]

    def slope(self, last: int | None = None) -> float:
        """Log-log slope over all points, or over the ``last`` largest ones."""
        tokens, macs = self.tokens, self.macs
        if last is not None:
            tokens, macs = tokens[-last:], macs[-last:]
        return loglog_slope(tokens, macs)


def _series(label: str, rows: Iterable[tuple[int, int, int]], count, progress: bool) -> ScalingSeries:
    rows = list(rows)
    sides, n_wins, macs = [], [], []
    for side, n_win, topk in tqdm(rows, desc=label, disable=not progress, leave=False):
        sides.append(side)
        n_wins.append(n_win)
        macs.append(count(side, n_win, topk))
    return ScalingSeries(label, sides, n_wins, macs)


def scaling_fixed_regions(
    sides: Sequence[int], channels: int = 16, n_win: int = 7, topk: int = 4, progress: bool = False
) -> ScalingSeries:
    """BRA with S and k fixed while the map grows: regions grow, so cost tends to (HW)^2."""
    return _series(f"BRA, S={n_win}, k={topk}", [(side, n_win, topk) for side in sides],
                   lambda side, s, kk: counted_bra_macs(side, side, channels, s, kk), progress)  # fmt: skip


def scaling_optimal_regions(
    cube_roots: Sequence[int] = (8, 12, 16, 20, 24, 28, 32, 40), channels: int = 16, progress: bool = False
) -> ScalingSeries:
    """BRA with S = S* = (k (HW)^2 / 2)^(1/6), exactly: k = 2 makes S* = (HW)^(1/3).

    With side = m^3 and S = m^2 (each region m x m tokens), S* is a whole number dividing the side for every m,
    so no rounding bends the curve.
    """
    rows = [(m**3, m**2, 2) for m in cube_roots]
    return _series("BRA, S = S*, k=2", rows, lambda side, s, kk: counted_bra_macs(side, side, channels, s, kk),
                   progress)  # fmt: skip


def scaling_window(sides: Sequence[int], channels: int = 16, window: int = 7, progress: bool = False) -> ScalingSeries:
    """Window attention (window side ``window``): cost grows like HW."""
    return _series(f"window {window}x{window}", [(side, side // window, 1) for side in sides],
                   lambda side, s, kk: counted_window_macs(side, channels, window), progress)  # fmt: skip


def optimal_regions_value(height: int, width: int, topk: int) -> float:
    """The paper's S* = (k (HW)^2 / 2)^(1/6) as a number."""
    return (topk * (height * width) ** 2 / 2) ** (1 / 6)
