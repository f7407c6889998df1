"""Interactive explorers for chapter 5: BRA's cost as S and k move, and where routing sends one region's queries.

Each explorer is split into a pure computation (:func:`complexity_breakdown`, :func:`routing_view`), a
drawing (:func:`draw_complexity`, :func:`draw_routing_view`) and the widget that wires sliders to both
(:func:`explore_complexity`, :func:`explore_routing`). The widgets need ipywidgets, from the ``[book]`` extra;
the computations and drawings do not, so the book's static figures use the same code as the widgets.

A widget is an ``ipywidgets.interactive``: ``widget.result`` is the latest computation and
``widget.kwargs_widgets`` its sliders; changing a slider's ``value`` recomputes and redraws, in a notebook
or in a test without one.

Why the widgets draw the way they do: with ipykernel 7 and JupyterLab 4.4 or newer, widget messages are handled
on a kernel *subshell*, a second thread, while the main thread may be running a cell. matplotlib is not
thread-safe: ``pyplot`` keeps one global list of figures, and one mathtext parser (which renders log-axis labels
such as ``10^2``) serves every thread. Two things flushed the main thread's half-built figures from the widget's
thread: ipykernel runs the ``post_execute`` hooks around *every* comm message, and matplotlib's hooks there
redraw (pyplot) and render and close (the inline backend) every open pyplot figure; the stock ``interactive``
flushes them once more on each update. Both threads then parsed mathtext at once and corrupted the parser
(``ParseException: Expected end of text, found '$'``). So:

- :func:`flush_figures_on_the_main_thread_only` makes matplotlib's kernel hooks (pyplot's redraw and the inline
  backend's flush) do nothing off the main thread (the main thread still shows each cell's figures when the cell
  ends); every explorer calls it;
- each explorer (:class:`Explorer`) draws on its own :class:`matplotlib.figure.Figure`, never through pyplot,
  with plain-text tick labels (no mathtext), renders it to PNG under a lock and shows that PNG.
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bralib.viz.routing import as_image, draw_routing, draw_token_attention, simple_features

TERM_LABELS = {
    "qkv_projection": "qkv projection",
    "region_averaging": "region averaging",
    "region_projection": "region q/k projection",
    "region_adjacency": "region adjacency",
    "topk": "top-k (no MACs)",
    "token_attention": "token attention",
    "lce": "LCE (5x5 depthwise)",
    "output_projection": "output projection",
}


def require_ipywidgets() -> Any:
    """The ipywidgets module, or an ImportError that says how to install it."""
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError(
            "bralib's interactive explorers need ipywidgets, which is in the book extra: pip install 'bralib[book]'"
        ) from err
    return ipywidgets


# ---------------------------------------------------------------- drawing safely from a widget's thread

# One widget update at a time: two explorers (or two quick slider moves) may be served on different threads.
_RENDER_LOCK = threading.RLock()


def plain_log_labels(axis: Any) -> None:
    """Tick labels of a log axis as plain text ("100", "0.5") instead of mathtext ("$10^{2}$")."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def render_png(draw: Callable[[Any], Any], figsize: tuple[float, float], dpi: int = 96) -> bytes:
    """``draw(figure)`` on a new pyplot-free :class:`~matplotlib.figure.Figure`, laid out and rendered to PNG bytes.

    The figure never enters pyplot's global figure list, so no other thread can display, close or re-render it.
    """
    from matplotlib.figure import Figure

    with _RENDER_LOCK:
        figure = Figure(figsize=figsize, dpi=dpi)
        draw(figure)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def flush_figures_on_the_main_thread_only() -> bool:
    """Make matplotlib's kernel hooks skip the calls made off the kernel's main thread.

    ipykernel runs the ``pre_execute``/``post_execute`` hooks around every comm (widget) message, on the thread that
    handled it. matplotlib registers two ``post_execute`` hooks: pyplot's ``_draw_all_if_interactive`` (redraws
    every stale figure) and the inline backend's ``flush_figures`` (renders, shows and closes every figure). Off the
    main thread they would draw the figures a cell is still building there. The main thread still runs them when
    each cell ends. Idempotent. Returns True when a matplotlib hook was found (in an IPython kernel).
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    found = False
    for event in ("pre_execute", "post_execute"):
        callbacks = shell.events.callbacks.get(event, [])
        for i, callback in enumerate(callbacks):
            if not (getattr(callback, "__module__", None) or "").split(".")[0].startswith("matplotlib"):
                continue
            found = True
            if not getattr(callback, "main_thread_only", False):
                callbacks[i] = _main_thread_only(callback)  # in place: the hooks keep their order
    return found


def _main_thread_only(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)  # keeps __module__ and __name__, so a second call recognises it
    def on_main_thread(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            return hook(*args, **kwargs)
        return None

    on_main_thread.main_thread_only = True  # type: ignore[attr-defined]
    return on_main_thread


@dataclass
class Frame:
    """What one widget update shows: the computed ``result``, a one-line ``summary`` and the picture as PNG."""

    result: Any
    summary: str
    png: bytes


@cache
def _explorer_class() -> type:
    """:class:`Explorer`, defined on first use because ipywidgets is an optional dependency (the book extra)."""
    widgets = require_ipywidgets()
    from IPython.display import Image, clear_output, display

    class Explorer(widgets.interactive):
        """An ``interactive`` whose function returns a :class:`Frame`; ``.result`` is the frame's ``result``.

        Unlike the stock ``interactive.update``, this one never flushes pyplot's figures (those belong to the
        cells on the main thread) and shows the frame's ready-made PNG, so an update can run on any thread.
        """

        error: Exception | None = None  # the latest update's failure, shown in the widget; None after a success

        def update(self, *args: Any) -> None:
            self.kwargs = {widget._kwarg: widget.get_interact_value() for widget in self.kwargs_widgets}
            try:
                frame = self.f(**self.kwargs)
            except Exception as err:  # noqa: BLE001 - shown in the widget, as interactive does
                self.error = err
                with self.out:
                    clear_output(wait=True)
                    print(f"{type(err).__name__}: {err}")
                return
            self.result, self.error = frame.result, None
            with self.out:
                clear_output(wait=True)
                print(frame.summary)
                display(Image(data=frame.png, format="png"))

    return Explorer


def Explorer(show: Callable[..., Frame], **sliders: Any) -> Any:  # noqa: N802 - reads as the class it makes
    """An explorer widget: ``show(**slider_values) -> Frame`` wired to ``sliders`` (see the module docstring)."""
    flush_figures_on_the_main_thread_only()
    return _explorer_class()(show, **sliders)


# ---------------------------------------------------------------- the cost of BRA


@cache
def _bra_terms_numeric(kernel: int) -> dict[str, Any]:
    """bra_terms as fast numeric functions of (H, W, C, S, k), lambdified once per kernel size."""
    import sympy as sp

    from bralib.complexity import symbolic as sy

    args = (sy.H, sy.W, sy.C, sy.S, sy.k)
    return {name: sp.lambdify(args, term, modules="math") for name, term in sy.bra_terms(kernel=kernel).items()}


@dataclass
class ComplexityResult:
    """BRA's multiply-adds on a side x side map, term by term, and the cost over every S dividing the side.

    ``curve`` maps S -> total MACs at this k (S from 1 to side, divisors only, with k <= S^2);
    ``s_star`` is the paper's S* = (k (HW)^2 / 2)^(1/6); ``best_n_win`` the cheapest S of ``curve``.
    """

    side: int
    channels: int
    n_win: int
    topk: int
    terms: dict[str, int]
    total: int
    s_star: float
    curve: dict[int, int]
    best_n_win: int
    full_attention: int


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _bra_total(side: int, channels: int, n_win: int, topk: int, kernel: int) -> dict[str, int]:
    functions = _bra_terms_numeric(kernel)
    return {name: round(fn(side, side, channels, n_win, topk)) for name, fn in functions.items()}


def complexity_breakdown(side: int, channels: int, n_win: int, topk: int, *, kernel: int = 5) -> ComplexityResult:
    """BRA's multiply-adds (:func:`bralib.complexity.bra_terms`) on a side x side map with ``channels``.

    ``n_win`` must divide ``side`` and ``topk`` lie in [1, n_win**2], as for the layer itself.
    """
    from bralib.complexity import symbolic as sy

    side, channels = _check_int("side", side), _check_int("channels", channels)
    n_win, topk = _check_int("n_win", n_win), _check_int("topk", topk)
    if side % n_win:
        raise ValueError(f"n_win={n_win} must divide side={side} (regions of whole tokens)")
    if topk > n_win * n_win:
        raise ValueError(f"topk={topk} must be at most n_win**2 = {n_win * n_win}")
    terms = _bra_total(side, channels, n_win, topk, kernel)
    curve = {s: sum(_bra_total(side, channels, s, topk, kernel).values()) for s in _divisors(side) if topk <= s * s}
    tokens = side * side
    # full attention in the same layer: its projections and attention, plus the LCE BRA also has
    full = sum(sy.full_attention_terms(side, side, channels).values()) + kernel**2 * tokens * channels
    return ComplexityResult(
        side=side, channels=channels, n_win=n_win, topk=topk, terms=terms, total=sum(terms.values()),
        s_star=(topk * tokens**2 / 2) ** (1 / 6), curve=curve, best_n_win=min(curve, key=curve.get),
        full_attention=full,
    )  # fmt: skip


def draw_complexity(result: ComplexityResult, axes: Any = None) -> Any:
    """Two panels: the cost by term (bars) and the total over S with the current S, the best S and S* marked.

    ``axes``: two matplotlib axes, or None for a new figure. Returns the axes.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})[1]
    bars, curve = axes
    names = [name for name in TERM_LABELS if name in result.terms]
    values = [result.terms[name] / 1e6 for name in names]
    bars.barh([TERM_LABELS[name] for name in names], values, color="#4c72b0")
    bars.invert_yaxis()
    bars.set_xlabel("MMACs")
    bars.set_title(
        f"{result.side}x{result.side}, C={result.channels}, S={result.n_win}, k={result.topk}: "
        f"{result.total / 1e6:.1f} MMACs", fontsize=9,
    )  # fmt: skip
    s_values = sorted(result.curve)
    totals = [result.curve[s] / 1e6 for s in s_values]
    curve.plot(s_values, totals, "o-", color="#4c72b0", label=f"BRA, k={result.topk}")
    curve.axhline(result.full_attention / 1e6, color="gray", linestyle=":", label="full attention (same layer)")
    curve.axvline(result.s_star, color="#dd8452", linestyle="--", label=f"paper's S* = {result.s_star:.2f}")
    curve.plot([result.n_win], [result.total / 1e6], "*", color="#c44e52", markersize=14, label=f"S = {result.n_win}")
    best = result.best_n_win
    curve.plot([best], [result.curve[best] / 1e6], "s", mfc="none", color="black", markersize=10,
               label=f"cheapest S = {best}")  # fmt: skip
    curve.set_xscale("log")
    curve.set_yscale("log")
    curve.set_xticks(s_values, [str(s) for s in s_values], minor=False)
    curve.set_xticks([], minor=True)  # no crowded 2x10^0, 3x10^0 ... labels between the divisors
    plain_log_labels(curve.yaxis)  # no mathtext: the widget draws off the main thread (see the module docstring)
    curve.set_xlabel("regions per side S (divisors of the side)")
    curve.set_ylabel("MMACs")
    curve.legend(fontsize=7)
    return axes


def explore_complexity(side: int = 56, channels: int = 64, n_win: int = 7, topk: int = 4) -> Any:
    """Sliders for S, k, the map side and the channels: BRA's cost by term and over S, with S* marked.

    S snaps to the divisors of the side and k to [1, S^2]. Returns the ``ipywidgets.interactive``;
    ``.result`` is the :class:`ComplexityResult` shown.
    """
    widgets = require_ipywidgets()

    side_slider = widgets.IntSlider(value=side, min=7, max=224, step=7, description="side", continuous_update=False)
    channel_slider = widgets.IntSlider(value=channels, min=16, max=512, step=16, description="channels C",
                                       continuous_update=False)  # fmt: skip
    s_slider = widgets.SelectionSlider(options=_divisors(side), value=n_win, description="S",
                                       continuous_update=False)  # fmt: skip
    k_slider = widgets.IntSlider(value=topk, min=1, max=n_win * n_win, description="k", continuous_update=False)

    def snap_s(change: dict) -> None:  # keep S a divisor of the side, as near as possible to the old S
        old, topk = s_slider.value, k_slider.value
        options = _divisors(change["new"])
        nearest = min(options, key=lambda s: (abs(math.log(s / old)), s))
        s_slider.options = options  # this resets S (and so k's range) for a moment: restore both
        s_slider.value = nearest
        k_slider.max = nearest * nearest
        k_slider.value = min(topk, nearest * nearest)

    def clamp_k(change: dict) -> None:
        k_slider.max = change["new"] ** 2

    side_slider.observe(snap_s, names="value")
    s_slider.observe(clamp_k, names="value")

    def show(side: int, channels: int, n_win: int, topk: int) -> Frame:
        topk = min(topk, n_win * n_win)
        result = complexity_breakdown(side, channels, n_win, topk)
        summary = (f"side {side}, C={channels}, S={n_win}, k={topk}: {result.total / 1e6:.1f} MMACs "
                   f"(paper's S* = {result.s_star:.2f}, cheapest S = {result.best_n_win})")  # fmt: skip
        png = render_png(lambda fig: draw_complexity(result, fig.subplots(1, 2, width_ratios=[1, 1.3])), (10, 3.6))
        return Frame(result, summary, png)

    return Explorer(show, side=side_slider, channels=channel_slider, n_win=s_slider, topk=k_slider)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------- routing on a real image


@dataclass
class RoutingView:
    """Routing of one region of a picture and the attention of its centre token.

    ``routed``: the k regions the query region routes to, best first (row-major numbers on the S x S grid);
    ``weights``: (side, side) attention of the query token over every token (0 outside the routed regions).
    """

    n_win: int
    topk: int
    query_region: int
    routed: list[int]
    query_token: tuple[int, int]
    weights: np.ndarray
    index: torch.Tensor  # (1, S*S, topk)


def routing_features(image: Any, side: int = 56, sharpness: float = 3.0) -> tuple[np.ndarray, torch.Tensor]:
    """The picture downscaled to side x side (area averaging) and its :func:`simple_features`, scaled.

    ``sharpness`` multiplies the unit-length features, so that token attention (softmax of their dot
    products) is visibly peaked; routing does not change with it. Returns ((side, side, 3), (1, side, side, 5)).
    """
    picture = torch.from_numpy(np.ascontiguousarray(as_image(image))).float()
    if picture.dim() != 3:
        raise ValueError(f"explore_routing needs a colour image (H, W, 3), got shape {tuple(picture.shape)}")
    small = F.interpolate(picture.permute(2, 0, 1)[None], size=(side, side), mode="area")[0].permute(1, 2, 0)
    small = small.clamp(0, 1).numpy()
    return small, simple_features(small) * sharpness


def routing_view(features: torch.Tensor, n_win: int, topk: int, query_region: int) -> RoutingView:
    """Route ``features`` (1, side, side, C) used as both q and k; the attention of the query region's centre token."""
    from bralib.ops import route_regions
    from bralib.ops.regions import region_of_tokens

    side = features.shape[1]
    if side % n_win:
        raise ValueError(f"n_win={n_win} must divide the feature map side {side}")
    if not 0 <= query_region < n_win * n_win:
        raise ValueError(f"query_region must be in [0, {n_win * n_win}), got {query_region}")
    _, index = route_regions(features, features, n_win=n_win, topk=topk)  # (1, S^2, topk)
    routed = index[0, query_region].tolist()
    region_side = side // n_win
    row, col = divmod(query_region, n_win)
    query = (row * region_side + region_side // 2, col * region_side + region_side // 2)
    token_region = region_of_tokens(side, side, n_win).view(side, side)  # region of every token
    allowed = torch.isin(token_region, index[0, query_region])  # (side, side)
    logits = features[0] @ features[0, query[0], query[1]]  # (side, side): q . k for every key token
    weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")).flatten(), 0).view(side, side)
    return RoutingView(n_win, topk, query_region, routed, query, weights.numpy(), index)


def draw_routing_view(picture: np.ndarray, view: RoutingView, axes: Any = None) -> Any:
    """Two panels: the routed regions of the query region, and its centre token's attention. Returns the axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        axes = plt.subplots(1, 2, figsize=(8, 4))[1]
    draw_routing(picture, view.index, view.n_win, view.query_region, axes[0],
                 title=f"S={view.n_win}, k={view.topk}: region {view.query_region} routes to {view.routed}"
                 if view.topk <= 6 else None)  # fmt: skip
    draw_token_attention(picture, view.weights, view.query_token, axes[1], n_win=view.n_win,
                         title=f"attention of token {view.query_token}")  # fmt: skip
    return axes


def explore_routing(image: Any, side: int = 56, n_win: int = 7, topk: int = 4) -> Any:
    """Sliders for S, k and the query region over a real picture: where the region routes, what one token sees.

    ``image`` (H, W, 3) is downscaled to side x side tokens (e.g. ``bralib.viz.sample_image("astronaut", 224)``).
    The query region is picked with the row/column sliders. (Clicking into the picture would need ipympl's
    live canvas, which is not safe to draw from the widget thread: see the module docstring.) Returns the
    ``ipywidgets.interactive``; ``.result`` is the :class:`RoutingView` shown.
    """
    widgets = require_ipywidgets()

    side = _check_int("side", side, 2)
    if side % n_win:
        raise ValueError(f"n_win={n_win} must divide side={side}")
    picture, features = routing_features(image, side)
    options = [d for d in _divisors(side) if d > 1]
    s_slider = widgets.SelectionSlider(options=options, value=n_win, description="S", continuous_update=False)
    k_slider = widgets.IntSlider(value=topk, min=1, max=n_win * n_win, description="k", continuous_update=False)
    row_slider = widgets.IntSlider(value=n_win // 2, min=0, max=n_win - 1, description="query row",
                                   continuous_update=False)  # fmt: skip
    col_slider = widgets.IntSlider(value=n_win // 2, min=0, max=n_win - 1, description="query col",
                                   continuous_update=False)  # fmt: skip

    def resize(change: dict) -> None:  # keep k and the query inside the new grid
        s = change["new"]
        k_slider.max = s * s
        for slider in (row_slider, col_slider):
            slider.value = min(slider.value * s // change["old"], s - 1)
            slider.max = s - 1

    s_slider.observe(resize, names="value")

    def show(n_win: int, topk: int, row: int, col: int) -> Frame:
        topk, row, col = min(topk, n_win * n_win), min(row, n_win - 1), min(col, n_win - 1)
        view = routing_view(features, n_win, topk, row * n_win + col)
        png = render_png(lambda fig: draw_routing_view(picture, view, fig.subplots(1, 2)), (8, 4))
        return Frame(view, f"S={n_win}, k={topk}: region {view.query_region} routes to {view.routed}", png)

    return Explorer(show, n_win=s_slider, topk=k_slider, row=row_slider, col=col_slider)
