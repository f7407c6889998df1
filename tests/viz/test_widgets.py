"""bralib.viz.widgets: the explorers built headless, sliders moved, results checked."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from bralib.complexity import evaluate
from bralib.complexity.symbolic import bra_flops
from bralib.ops import route_regions
from bralib.viz import widgets


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _slider(widget, description):
    return next(w for w in widget.kwargs_widgets if w.description == description)


def _picture(side=56, seed=0):
    rng = np.random.default_rng(seed)
    picture = np.zeros((side, side, 3), dtype=np.float32)
    picture[: side // 2, :, 0] = 1.0  # red top half, blue bottom half, some noise for texture
    picture[side // 2 :, :, 2] = 1.0
    return np.clip(picture + 0.1 * rng.random(picture.shape), 0, 1)


def test_complexity_breakdown_is_the_symbolic_formula():
    result = widgets.complexity_breakdown(56, 64, 7, 4)
    assert result.total == evaluate(bra_flops(), H=56, W=56, C=64, S=7, k=4)
    assert result.s_star == pytest.approx((4 * 3136**2 / 2) ** (1 / 6))
    assert set(result.curve) == {2, 4, 7, 8, 14, 28, 56}  # divisors of 56 with k <= S^2
    assert result.best_n_win == min(result.curve, key=result.curve.get)
    with pytest.raises(ValueError, match="must divide side"):
        widgets.complexity_breakdown(56, 64, 5, 4)
    with pytest.raises(ValueError, match="at most n_win"):
        widgets.complexity_breakdown(56, 64, 2, 5)


def test_explore_complexity_reacts_to_its_sliders():
    widget = widgets.explore_complexity(side=56, channels=64, n_win=7, topk=4)
    first = widget.result
    assert (first.n_win, first.topk, first.total) == (7, 4, widgets.complexity_breakdown(56, 64, 7, 4).total)

    _slider(widget, "k").value = 8  # twice the routed regions: token attention doubles, nothing else moves
    assert widget.result.terms["token_attention"] == 2 * first.terms["token_attention"]
    assert widget.result.terms["qkv_projection"] == first.terms["qkv_projection"]

    _slider(widget, "S").value = 14  # more, smaller regions: cheaper attention, dearer routing
    assert widget.result.n_win == 14
    assert widget.result.terms["token_attention"] < first.terms["token_attention"]
    assert widget.result.terms["region_adjacency"] > first.terms["region_adjacency"]

    _slider(widget, "channels C").value = 128
    assert widget.result.terms["qkv_projection"] == 4 * first.terms["qkv_projection"]

    _slider(widget, "side").value = 63  # S snaps to a divisor of 63 near 14
    assert 63 % widget.result.n_win == 0 and widget.result.side == 63
    assert widget.result.topk == 8  # k survives the change of S's options
    assert widget.result.s_star > first.s_star


def test_explore_routing_reacts_to_its_sliders():
    picture = _picture()
    widget = widgets.explore_routing(picture, side=28, n_win=7, topk=4)
    first = widget.result
    _, features = widgets.routing_features(picture, 28)
    expected = route_regions(features, features, n_win=7, topk=4)[1][0, first.query_region].tolist()
    assert first.routed == expected and len(first.routed) == 4
    assert first.weights.sum() == pytest.approx(1.0, abs=1e-5)

    _slider(widget, "k").value = 2  # the two best of the same ranking
    assert widget.result.routed == first.routed[:2]
    assert np.count_nonzero(widget.result.weights) == 2 * 16  # two regions of 4x4 tokens

    _slider(widget, "query row").value = 0  # a region in the red half routes within the red half
    _slider(widget, "query col").value = 0
    top = widget.result
    assert top.query_region == 0 and top.query_token == (2, 2)
    assert all(region // 7 <= 3 for region in top.routed)  # region rows 0-3 hold the red top half

    _slider(widget, "S").value = 4
    assert widget.result.n_win == 4 and widget.result.index.shape == (1, 16, 2)


def test_static_drawings_match_the_widgets():
    axes = widgets.draw_complexity(widgets.complexity_breakdown(56, 64, 7, 4))
    assert len(axes) == 2
    picture, features = widgets.routing_features(_picture(), 28)
    view = widgets.routing_view(features, 7, 3, 10)
    drawn = widgets.draw_routing_view(picture, view)
    assert len(drawn) == 2
    assert torch.equal(view.index, route_regions(features, features, n_win=7, topk=3)[1])


def test_without_ipywidgets_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'bralib\[book\]'"):
        widgets.explore_complexity()
    with pytest.raises(ImportError, match=r"pip install 'bralib\[book\]'"):
        widgets.explore_routing(_picture())


def test_exported_from_bralib_viz():
    import bralib.viz

    assert bralib.viz.explore_complexity is widgets.explore_complexity
    assert bralib.viz.explore_routing is widgets.explore_routing


def test_updates_leave_pyplot_and_mathtext_alone(monkeypatch):
    """A widget update may run on a kernel subshell thread: it must not touch pyplot's figures or mathtext."""
    import ipywidgets.widgets.interaction as interaction
    from matplotlib import mathtext

    flushes = []
    monkeypatch.setattr(interaction, "show_inline_matplotlib_plots", lambda: flushes.append(1))

    def no_mathtext(*args, **kwargs):
        raise AssertionError(f"a widget parsed mathtext {args[1:2]}: not thread-safe")

    monkeypatch.setattr(mathtext.MathTextParser, "parse", no_mathtext)
    cell_figure = plt.figure()  # a later cell's figure, still being built on the main thread
    complexity = widgets.explore_complexity(side=56, channels=64, n_win=7, topk=4)
    _slider(complexity, "k").value = 5
    routing = widgets.explore_routing(_picture(), side=28, n_win=7, topk=4)
    _slider(routing, "query row").value = 1
    assert flushes == []  # the stock interactive would have displayed and closed cell_figure
    assert plt.get_fignums() == [cell_figure.number]
    assert complexity.result.topk == 5 and routing.result.query_region == 7 * 1 + 3


def test_a_slider_moved_on_another_thread_while_cells_draw():
    """What a subshell does: slider updates on a second thread while the main thread draws log-scale figures."""
    import threading

    widget = widgets.explore_complexity(side=56, channels=64, n_win=7, topk=4)
    errors = []

    def move_sliders():
        try:
            for step in range(6):
                _slider(widget, "k").value = 1 + step % 9
                assert widget.result.topk == 1 + step % 9
        except Exception as err:  # noqa: BLE001 - reported by the main thread below
            errors.append(err)

    thread = threading.Thread(target=move_sliders)
    thread.start()
    while thread.is_alive():  # a cell on the main thread: log axes, mathtext labels, tight_layout
        fig, ax = plt.subplots()
        ax.loglog([1, 10, 100], [1e2, 1e4, 1e6])
        fig.tight_layout()
        fig.canvas.draw()
        plt.close(fig)
    thread.join()
    assert errors == [] and widget.error is None


def test_the_inline_backends_hook_flushes_on_the_main_thread_only(monkeypatch):
    """ipykernel runs post_execute hooks after each widget message, on the subshell thread that handled it."""
    import threading

    import IPython
    from IPython.core.events import EventManager, available_events

    calls = []

    def flush_figures():  # stands in for matplotlib_inline.backend_inline.flush_figures
        calls.append("flush " + threading.current_thread().name)

    def draw_all():  # stands in for pyplot's _draw_all_if_interactive
        calls.append("draw " + threading.current_thread().name)

    def other_hook():
        calls.append("other")

    flush_figures.__module__ = "matplotlib_inline.backend_inline"
    draw_all.__module__ = "matplotlib.pyplot"
    shell = type("Shell", (), {})()
    shell.events = EventManager(shell, available_events)
    for hook in (other_hook, draw_all, flush_figures):
        shell.events.register("post_execute", hook)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)

    assert widgets.flush_figures_on_the_main_thread_only() is True
    assert widgets.flush_figures_on_the_main_thread_only() is True  # idempotent: wrapped once
    thread = threading.Thread(target=shell.events.trigger, args=("post_execute",), name="subshell-1")
    thread.start()
    thread.join()
    assert calls == ["other"]  # off the main thread: the figures are left to the cell that draws them
    shell.events.trigger("post_execute")
    main = threading.main_thread().name
    assert calls == ["other", "other", f"draw {main}", f"flush {main}"]

    widgets.explore_complexity()  # every explorer applies it, and wraps nothing twice
    hooks = shell.events.callbacks["post_execute"]
    assert len(hooks) == 3 and hooks[0] is other_hook
    assert [h.__wrapped__ for h in hooks[1:]] == [draw_all, flush_figures]  # one wrapper each


def test_outside_a_kernel_there_is_no_hook_to_wrap(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert widgets.flush_figures_on_the_main_thread_only() is False
