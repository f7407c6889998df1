"""Schematic diagrams of BRA and BiFormer, drawn by code: the two levels, the gather's memory, the block, the pyramid.

Every function draws a new matplotlib figure (through pyplot, like the chapters' own plots) and returns it; a
chapter shows it with ``plt.show()``. The pictures are schematics, but their content is computed, not typed in:
the routed regions are a real top-k of a region adjacency, the gathered blocks follow a real routing index, the
pyramid's sizes come from a model configuration, the roofline's points from the FLOPs and bytes you pass. Each
diagram draws in well under a second.

* :func:`draw_bra_levels`: regions -> region graph -> top-k -> gather -> token attention + local context.
* :func:`draw_gather_layout`: K in region order against the gathered K^g, one row per region: why k copies.
* :func:`draw_biformer_block`: position encoding, pre-norm attention and pre-norm MLP, with their residuals.
* :func:`draw_biformer_pyramid`: stem and four stages, map sizes, channels, blocks and what attention each uses.
* :func:`draw_roofline`: attainable FLOP/s against arithmetic intensity, with the steps you pass placed on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

QUERY_COLOR = "#ffd400"  # the query region: yellow, as in bralib.viz.routing
ROUTED_COLOR = "#00b8d4"  # routed regions: cyan
BOX_COLOR = "#e8eef7"
LCE_COLOR = "#f6d7c3"
STEP_NAMES = ("1. regions", "2. region graph", "3. top-k", "4. gather", "5. attend + local context")


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _region_colors(n_regions: int) -> np.ndarray:
    """(n_regions, 4) RGBA: one distinct pastel colour per region."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return np.array([cmap(r % 20) for r in range(n_regions)])


def _check_routing(n_win: int, topk: int) -> None:
    if not isinstance(n_win, int) or n_win < 1:
        raise ValueError(f"n_win must be a positive int (regions per side), got {n_win!r}")
    if not isinstance(topk, int) or not 1 <= topk <= n_win * n_win:
        raise ValueError(f"topk must be an int between 1 and n_win**2 = {n_win * n_win}, got {topk!r}")


def region_adjacency(n_win: int, channels: int = 8, seed: int = 0) -> np.ndarray:
    """A region adjacency of random region-mean queries and keys, (S*S, S*S): row i scores key regions for region i.

    Seeded, so every drawing of the same arguments shows the same graph. Real routing uses the region means of
    a layer's q and k (chapter 3); for a schematic, random ones show the same mechanics.
    """
    rng = np.random.default_rng(seed)
    q_regions = rng.standard_normal((n_win * n_win, channels))  # (S^2, C)
    k_regions = rng.standard_normal((n_win * n_win, channels))  # (S^2, C)
    return q_regions @ k_regions.T  # (S^2, S^2)


def routing_index(adjacency: np.ndarray, topk: int) -> np.ndarray:
    """The top-k columns of every row of ``adjacency``, best first: (S*S, topk) ints (ties: lower column first)."""
    return np.argsort(-adjacency, axis=1, kind="stable")[:, :topk]


# ---------------------------------------------------------------- the two levels of BRA


def _draw_grid(ax: Any, n_win: int, query_region: int, routed: Sequence[int] = (), ranks: bool = False) -> None:
    """S x S regions of 2 x 2 tokens; the query region outlined in yellow, routed regions filled cyan."""
    from matplotlib.patches import Rectangle

    side = 2 * n_win  # two tokens per region side: enough to show tokens inside regions
    for t in range(side + 1):
        width = 1.4 if t % 2 == 0 else 0.3
        ax.plot([0, side], [t, t], color="0.5", lw=width)
        ax.plot([t, t], [0, side], color="0.5", lw=width)
    for rank, region in enumerate(routed, start=1):
        row, col = divmod(int(region), n_win)
        ax.add_patch(Rectangle((2 * col, 2 * row), 2, 2, color=ROUTED_COLOR, alpha=0.55, lw=0))
        if ranks:
            ax.text(2 * col + 1, 2 * row + 1, str(rank), ha="center", va="center", fontsize=9, weight="bold")
    row, col = divmod(query_region, n_win)
    ax.add_patch(Rectangle((2 * col, 2 * row), 2, 2, fill=False, ec=QUERY_COLOR, lw=2.5, ls="--"))
    ax.set(xlim=(-0.2, side + 0.2), ylim=(side + 0.2, -0.2), aspect="equal", xticks=[], yticks=[])


def draw_bra_levels(
    n_win: int = 4, topk: int = 3, query_region: int = 5, steps: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0
) -> Any:
    """The two levels of BRA as a strip of panels, one per step (``steps``: any of 1-5, in order).

    1. the map cut into S x S regions (2 x 2 tokens each here), the query region outlined;
    2. the region graph: the (S², S²) adjacency of region-mean queries and keys, the query's row boxed;
    3. top-k: the k best key regions of that row, ranked on the map;
    4. gather: the k routed regions' keys and values copied into one contiguous set of k·n tokens;
    5. token attention of the region's n queries over those k·n keys, plus the local context enhancement
       (a depthwise convolution of V) added to the output.

    Returns the figure; its panels are ``fig.axes`` in the order of ``steps``.
    """
    _check_routing(n_win, topk)
    if not 0 <= query_region < n_win * n_win:
        raise ValueError(f"query_region must be a region number in [0, {n_win * n_win}), got {query_region}")
    if not steps or any(s not in (1, 2, 3, 4, 5) for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"steps must be distinct numbers from 1 to 5 in increasing order, got {list(steps)}")
    plt = _plt()
    adjacency = region_adjacency(n_win, seed=seed)
    routed = [int(r) for r in routing_index(adjacency, topk)[query_region]]
    fig, axes = plt.subplots(1, len(steps), figsize=(3.0 * len(steps), 3.3), squeeze=False)
    for ax, step in zip(axes[0], steps, strict=True):
        ax.set_title(STEP_NAMES[step - 1], fontsize=10)
        if step == 1:
            _draw_grid(ax, n_win, query_region)
            ax.set_xlabel(f"S = {n_win}: {n_win * n_win} regions", fontsize=8)
        elif step == 2:
            _draw_adjacency(ax, adjacency, query_region, routed)
        elif step == 3:
            _draw_grid(ax, n_win, query_region, routed, ranks=True)
            ax.set_xlabel(f"row {query_region}'s top-{topk}: {routed}", fontsize=8)
        elif step == 4:
            _draw_gathered(ax, n_win, routed)
        else:
            _draw_token_attention(ax, topk)
    fig.suptitle(
        "Bi-level routing attention: coarse routing between regions (1-3), fine attention between tokens (4-5)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _draw_adjacency(ax: Any, adjacency: np.ndarray, query_region: int, routed: Sequence[int]) -> None:
    from matplotlib.patches import Rectangle

    n = adjacency.shape[0]
    limit = np.abs(adjacency).max()
    ax.imshow(adjacency, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.add_patch(Rectangle((-0.5, query_region - 0.5), n, 1, fill=False, ec="black", lw=1.5))
    for region in routed:
        ax.add_patch(Rectangle((region - 0.5, query_region - 0.5), 1, 1, fill=False, ec=ROUTED_COLOR, lw=2))
    ax.set(xticks=[], yticks=[], xlabel="key region", ylabel="query region")
    ax.xaxis.label.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)


def _draw_gathered(ax: Any, n_win: int, routed: Sequence[int]) -> None:
    """The routed regions' 4 tokens each, copied side by side: one key/value set of k*n tokens."""
    from matplotlib.patches import Rectangle

    colors = _region_colors(n_win * n_win)
    for t, region in enumerate(routed):
        for j in range(4):  # 2 x 2 tokens per region, in row-major order
            ax.add_patch(Rectangle((4 * t + j, 0), 1, 1, color=colors[region], ec="white", lw=1))
        ax.text(4 * t + 2, 1.5, f"region {region}", ha="center", fontsize=8)
    for name, y in (("K^g", 0.5), ("V^g", -1.0)):
        ax.text(-0.4, y, name, ha="right", va="center", fontsize=9)
    for t, region in enumerate(routed):
        for j in range(4):
            ax.add_patch(Rectangle((4 * t + j, -1.5), 1, 1, color=colors[region], ec="white", lw=1, alpha=0.6))
    ax.set(xlim=(-2.2, 4 * len(routed) + 0.3), ylim=(-2.2, 2.4), xticks=[], yticks=[])
    ax.set_xlabel(f"k·n = {len(routed)} x 4 tokens, contiguous", fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_token_attention(ax: Any, topk: int) -> None:
    """n queries x k*n keys of scores (the region's attention), then + dwconv(V): the LCE."""
    from matplotlib.patches import FancyBboxPatch

    rng = np.random.default_rng(1)
    scores = rng.random((4, 4 * topk))
    weights = np.exp(3 * scores) / np.exp(3 * scores).sum(1, keepdims=True)  # softmax rows, for the look
    ax.imshow(weights, cmap="Greys", extent=(0, 4 * topk, 4, 0), interpolation="nearest")
    ax.text(2 * topk, -0.6, "softmax(Q K^gᵀ) V^g", ha="center", fontsize=8)
    ax.text(-0.5, 2, "n queries", ha="right", va="center", fontsize=8, rotation=90)
    ax.add_patch(FancyBboxPatch((0, 5.4), 4 * topk, 1.6, boxstyle="round,pad=0.1", fc=LCE_COLOR, ec="0.3"))
    ax.text(2 * topk, 6.2, "+ LCE: depthwise 5x5 conv of V", ha="center", va="center", fontsize=8)
    ax.set(xlim=(-1.6, 4 * topk + 0.4), ylim=(7.6, -1.4), xticks=[], yticks=[])
    ax.set_xlabel(f"{4 * topk} gathered keys", fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)


# ---------------------------------------------------------------- the gather's memory


def copies_per_region(index: np.ndarray, n_regions: int) -> np.ndarray:
    """How many times the gather copies each region: (n_regions,) ints; they sum to index.size."""
    return np.bincount(np.asarray(index).reshape(-1), minlength=n_regions)


def draw_gather_layout(n_win: int = 3, topk: int = 2, index: Any = None, seed: int = 0) -> Any:
    """K in region order (top) and the gathered K^g (below, one row per query region), coloured by source region.

    ``index``: a (S*S, topk) routing index (numpy or torch), or None for the top-k of a seeded random
    adjacency. The column on the right counts how often each region is copied: popular regions many times,
    others never, k·S² region copies in all, k times the size of K whatever the routing.
    """
    from matplotlib.patches import Rectangle

    _check_routing(n_win, topk)
    n_regions = n_win * n_win
    if index is None:
        index = routing_index(region_adjacency(n_win, seed=seed), topk)
    index = np.asarray(index.cpu() if hasattr(index, "cpu") else index).reshape(-1, np.shape(index)[-1])
    if index.shape != (n_regions, topk) or index.min() < 0 or index.max() >= n_regions:
        raise ValueError(
            f"index must be (n_win**2, topk) = ({n_regions}, {topk}) region numbers in [0, {n_regions}), "
            f"got shape {index.shape}"
        )
    plt = _plt()
    colors = _region_colors(n_regions)
    copies = copies_per_region(index, n_regions)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(6.0, 0.55 * n_regions + 2.5), 1.8 + 0.42 * n_regions),
        gridspec_kw={"height_ratios": [1.8, n_regions]},
    )  # fmt: skip
    for r in range(n_regions):  # K: every region once, in region order
        top.add_patch(Rectangle((r, 0), 1, 1, color=colors[r], ec="white", lw=1.5))
        top.text(r + 0.5, 0.5, str(r), ha="center", va="center", fontsize=8)
        top.text(r + 0.5, 1.45, f"{copies[r]}x", ha="center", va="center", fontsize=7, color="0.25")
    top.set(xlim=(0, max(n_regions, topk) + 0.1), ylim=(1.8, -0.05), xticks=[], yticks=[])
    top.set_title(f"K in region order: {n_regions} regions of n tokens, each stored once", fontsize=9)
    top.set_xlabel("below each region: how many times the gather copies it", fontsize=7)
    for r in range(n_regions):  # K^g: row r holds the topk regions that region r routes to
        for t, source in enumerate(index[r]):
            bottom.add_patch(Rectangle((t, r), 1, 1, color=colors[source], ec="white", lw=1.5))
            bottom.text(t + 0.5, r + 0.5, str(int(source)), ha="center", va="center", fontsize=8)
        bottom.text(-0.2, r + 0.5, f"query region {r}", ha="right", va="center", fontsize=7)
    bottom.set(xlim=(-2.6, topk + 2.6), ylim=(n_regions + 0.05, -0.05), xticks=[], yticks=[])
    bottom.set_title(f"K^g: {n_regions} x {topk} region copies = {topk} x the size of K (V^g the same)", fontsize=9)
    for ax in (top, bottom):
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the block and the pyramid


def _box(ax: Any, x: float, y: float, text: str, width: float = 1.5, color: str = BOX_COLOR) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y - 0.35), width, 0.7, boxstyle="round,pad=0.05", fc=color, ec="0.3"))
    ax.text(x + width / 2, y, text, ha="center", va="center", fontsize=8)


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "0.2", "lw": 1.2})


def draw_biformer_block(attention: str = "BRA") -> Any:
    """A BiFormer block, left to right: x + DWConv3x3(x); x + attention(LN(x)); x + MLP(LN(x)).

    Each "+" is a residual connection (drawn as the line above the boxes); drop path, in training, acts on the
    branch before each "+". ``attention`` labels the attention box ("BRA" in stages 1-3, e.g. "global MHSA"
    for stage 4).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 2.4))
    branches = [
        (["DWConv 3x3\n(position enc.)"], "depthwise: where a token sits"),
        (["LayerNorm", f"{attention}\n(+ LCE)"], "pre-norm attention"),
        (["LayerNorm", "MLP\nC -> 3C -> C"], "pre-norm MLP"),
    ]
    x = 0.0
    ax.text(x, 0, "x\n(B, H, W, C)", ha="center", va="center", fontsize=8)
    x += 0.6
    for boxes, note in branches:
        start = x
        _arrow(ax, (x, 0), (x + 0.3, 0))
        x += 0.3
        for i, text in enumerate(boxes):
            _box(ax, x, 0, text, color=LCE_COLOR if "BRA" in text or "MHSA" in text else BOX_COLOR)
            x += 1.5
            if i + 1 < len(boxes):
                _arrow(ax, (x, 0), (x + 0.3, 0))
                x += 0.3
        _arrow(ax, (x, 0), (x + 0.3, 0))
        x += 0.3
        ax.add_patch(_plus(x + 0.15))
        ax.plot([start - 0.15, start - 0.15, x + 0.15, x + 0.15], [0, 0.8, 0.8, 0.15], color="0.35", lw=1.1)
        ax.text((start + x) / 2, 0.95, f"residual: {note}", ha="center", fontsize=7, color="0.3")
        x += 0.3
    _arrow(ax, (x, 0), (x + 0.4, 0))
    ax.text(x + 0.9, 0, "out\n(B, H, W, C)", ha="center", va="center", fontsize=8)
    ax.set(xlim=(-0.6, x + 1.5), ylim=(-0.7, 1.25), xticks=[], yticks=[], aspect="equal")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("A BiFormer block (channels-last): three residual steps", fontsize=10)
    fig.tight_layout()
    return fig


def _plus(x: float) -> Any:
    from matplotlib.patches import Circle

    return Circle((x, 0), 0.15, fc="white", ec="0.2", lw=1.2)


def draw_biformer_pyramid(config: Any = None, image_size: int = 224, name: str = "BiFormer-T") -> Any:
    """The stem and four stages of a BiFormer: map side, channels, blocks and the attention of each stage.

    ``config``: a ``bralib.models.BiFormerConfig`` (default: ``MODEL_CONFIGS["biformer_tiny"]``). Box heights
    follow the map side (strides 4, 8, 16, 32), widths the channels. Under each stage: S regions per side, k
    routed regions and the tokens each query attends to, k·(side/S)², or "global" where the stage does not route.
    """
    from matplotlib.patches import Rectangle

    if config is None:
        from bralib.models import MODEL_CONFIGS

        config = MODEL_CONFIGS["biformer_tiny"]
    if image_size % 32:
        raise ValueError(
            f"image_size must be a multiple of 32 (four halvings after the stride-4 stem), got {image_size}"
        )
    n_wins = config.n_win if isinstance(config.n_win, tuple | list) else (config.n_win,) * 4
    sides = [image_size // 4 // 2**i for i in range(4)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    height = lambda side: 2.3 * side / sides[0] + 0.95  # noqa: E731 - a scale, not a function worth naming
    ax.add_patch(Rectangle((0, -1.3), 0.9, 2.6, fc="#dddddd", ec="0.3"))
    ax.text(0.45, 0, f"image\n{image_size}²\nx 3", ha="center", va="center", fontsize=8)
    _arrow(ax, (0.95, 0), (1.45, 0))
    ax.text(1.2, 0.25, "stem\n/4", ha="center", fontsize=7)
    x = 1.5
    for stage, (side, dim, depth, topk, n_win) in enumerate(
        zip(sides, config.dims, config.depths, config.topks, n_wins, strict=True), start=1
    ):
        width = 0.6 + 1.2 * np.log2(dim / 16) / 5
        h = height(side)
        routed = topk is not None and topk > 0
        ax.add_patch(Rectangle((x, -h / 2), width, h, fc=BOX_COLOR if routed else "#f3e6c4", ec="0.3"))
        ax.text(x + width / 2, 0, f"stage {stage}\n{side}x{side}\nC = {dim}\nx {depth}", ha="center", va="center",
                fontsize=8)  # fmt: skip
        tokens = topk * (side // n_win) ** 2 if routed else side * side
        what = f"BRA S={n_win}, k={topk}\n{tokens} tokens/query" if routed else f"global attention\n{tokens} tokens"
        ax.text(x + width / 2, -1.9, what, ha="center", va="top", fontsize=7)
        x += width
        if stage < 4:
            _arrow(ax, (x + 0.05, 0), (x + 0.55, 0))
            ax.text(x + 0.3, 0.25, "/2", ha="center", fontsize=7)
            x += 0.6
    ax.set(xlim=(-0.2, x + 0.3), ylim=(-2.8, 1.8), xticks=[], yticks=[])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{name}: a four-stage pyramid at strides 4, 8, 16, 32 ({image_size}² input)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- roofline


def attainable(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """The roofline: FLOP/s a step of ``intensity`` FLOP/byte can reach, min(peak, intensity * bandwidth)."""
    return min(peak_flops, intensity * bandwidth)


def draw_roofline(
    steps: Mapping[str, tuple[float, float]], peak_flops: float, bandwidth: float, title: str = "Roofline"
) -> Any:
    """Attainable FLOP/s against arithmetic intensity (log-log), with each step placed on the roof.

    steps: name -> (FLOPs, bytes) of one step; a step with 0 FLOPs (a pure copy) is listed in the legend with
    its bytes, since it has no place on a FLOP/s axis. peak_flops: FLOP/s; bandwidth: bytes/s. The dashed
    vertical line is the balance peak_flops / bandwidth: steps left of it are memory-bound.
    """
    if peak_flops <= 0 or bandwidth <= 0:
        raise ValueError(f"peak_flops and bandwidth must be positive, got {peak_flops} and {bandwidth}")
    plt = _plt()
    balance = peak_flops / bandwidth
    points = {name: fb for name, fb in steps.items() if fb[0] > 0 and fb[1] > 0}
    copies = {name: fb[1] for name, fb in steps.items() if fb[0] == 0}
    intensities = [f / b for f, b in points.values()] or [balance]
    low, high = min(min(intensities), balance) / 4, max(max(intensities), balance) * 4
    grid = np.geomspace(low, high, 200)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    ax.loglog(grid, np.minimum(peak_flops, grid * bandwidth), color="0.2", lw=2, label="roof: min(peak, I x bandwidth)")
    ax.axvline(balance, color="0.5", ls="--", lw=1)
    ax.text(balance * 1.1, peak_flops * 0.5, f"balance {balance:.1f} FLOP/B", fontsize=8, color="0.3")
    markers = "osD^v<>ph*"
    for i, (name, (flops, nbytes)) in enumerate(points.items()):
        intensity = flops / nbytes
        bound = "memory" if intensity < balance else "compute"
        ax.loglog([intensity], [attainable(intensity, peak_flops, bandwidth)], markers[i % len(markers)],
                  markersize=8, label=f"{name}: {intensity:.2f} FLOP/B ({bound}-bound)")  # fmt: skip
    for name, nbytes in copies.items():
        ax.plot([], [], " ", label=f"{name}: 0 FLOPs, {nbytes / 1e6:.0f} MB moved (off the chart)")
    ax.set(xlabel="arithmetic intensity (FLOP / byte)", ylabel="attainable FLOP/s", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
