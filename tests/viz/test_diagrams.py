"""Schematic diagrams draw what they claim: real top-k routing, k copies in the gather, model sizes, a roofline."""

import time

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from bralib.models import MODEL_CONFIGS
from bralib.viz import (
    diagrams,
    draw_biformer_block,
    draw_biformer_pyramid,
    draw_bra_levels,
    draw_gather_layout,
    draw_roofline,
)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_routing_is_the_top_k_of_the_drawn_adjacency():
    adjacency = diagrams.region_adjacency(4, seed=3)
    index = diagrams.routing_index(adjacency, 3)
    expected = torch.topk(torch.from_numpy(adjacency), 3, dim=-1).indices.numpy()
    assert np.array_equal(index, expected)
    fig = draw_bra_levels(n_win=4, topk=3, query_region=6, seed=3)
    assert [ax.get_title() for ax in fig.axes] == list(diagrams.STEP_NAMES)
    ranks = {t.get_text(): t.get_position() for t in fig.axes[2].texts}  # rank labels at region centres
    for rank, region in enumerate(index[6], start=1):
        row, col = divmod(int(region), 4)
        assert ranks[str(rank)] == (2 * col + 1, 2 * row + 1)
    assert [t.get_text() for t in fig.axes[3].texts if t.get_text().startswith("region")] == [
        f"region {r}" for r in index[6]
    ]
    plt.close(fig)


def test_steps_choose_the_panels_and_bad_arguments_are_refused():
    fig = draw_bra_levels(steps=(1, 2, 3))
    assert [ax.get_title() for ax in fig.axes] == list(diagrams.STEP_NAMES[:3])
    plt.close(fig)
    with pytest.raises(ValueError, match="steps must be distinct numbers from 1 to 5"):
        draw_bra_levels(steps=(3, 1))
    with pytest.raises(ValueError, match="topk must be an int between 1 and n_win"):
        draw_bra_levels(n_win=2, topk=5)
    with pytest.raises(ValueError, match="query_region must be a region number in"):
        draw_bra_levels(n_win=2, topk=1, query_region=4)


def test_gather_layout_copies_each_region_as_often_as_the_index_says():
    index = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 0]])  # region 0 is routed to by all four
    fig = draw_gather_layout(n_win=2, topk=2, index=index)
    top, bottom = fig.axes
    assert [t.get_text() for t in top.texts if t.get_text().endswith("x")] == ["4x", "2x", "1x", "1x"]
    drawn = [int(t.get_text()) for t in bottom.texts if t.get_text().isdigit()]
    assert drawn == index.reshape(-1).tolist()  # row by row, the routed regions in rank order
    assert sum(diagrams.copies_per_region(index.numpy(), 4)) == index.numel()  # k * S^2 region copies
    assert "2 x the size of K" in bottom.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match=r"index must be \(n_win\*\*2, topk\) = \(4, 2\)"):
        draw_gather_layout(n_win=2, topk=2, index=np.zeros((4, 3), dtype=int))


def test_block_shows_its_three_residual_steps():
    fig = draw_biformer_block(attention="global MHSA")
    labels = texts(fig)
    assert sum(label.startswith("residual:") for label in labels) == 3
    assert any("DWConv 3x3" in label for label in labels) and any("global MHSA" in label for label in labels)
    assert sum(label == "LayerNorm" for label in labels) == 2
    plt.close(fig)


@pytest.mark.parametrize("name", ["biformer_tiny", "biformer_nano"])
def test_pyramid_sizes_come_from_the_configuration(name):
    config = MODEL_CONFIGS[name]
    size = config.input_size
    fig = draw_biformer_pyramid(config, image_size=size, name=name)
    labels = texts(fig)
    n_wins = config.n_win if isinstance(config.n_win, tuple) else (config.n_win,) * 4
    for stage, (dim, depth, topk, n_win) in enumerate(
        zip(config.dims, config.depths, config.topks, n_wins, strict=True)
    ):
        side = size // 4 // 2**stage
        assert f"stage {stage + 1}\n{side}x{side}\nC = {dim}\nx {depth}" in labels
        if topk is None:
            assert f"global attention\n{side * side} tokens" in labels
        else:
            assert f"BRA S={n_win}, k={topk}\n{topk * (side // n_win) ** 2} tokens/query" in labels
    plt.close(fig)
    with pytest.raises(ValueError, match="image_size must be a multiple of 32"):
        draw_biformer_pyramid(image_size=100)


def test_roofline_places_each_step_on_the_roof():
    peak, bandwidth = 1e11, 1e10  # balance 10 FLOP/byte
    fig = draw_roofline({"matmul": (4e9, 1e8), "softmax": (1e8, 1e8), "copy": (0, 3e8)}, peak, bandwidth)
    ax = fig.axes[0]
    points = {line.get_label().split(":")[0]: (line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines[2:]
              if len(line.get_xdata())}  # fmt: skip
    assert points["matmul"] == (40.0, peak)  # right of the balance: the flat roof
    assert points["softmax"] == (1.0, 1.0 * bandwidth)  # left of it: bandwidth times intensity
    labels = [line.get_label() for line in ax.lines]
    assert any("matmul: 40.00 FLOP/B (compute-bound)" in label for label in labels)
    assert any("softmax: 1.00 FLOP/B (memory-bound)" in label for label in labels)
    assert any(label.startswith("copy: 0 FLOPs, 300 MB") for label in labels)
    assert diagrams.attainable(5.0, peak, bandwidth) == 5e10
    plt.close(fig)
    with pytest.raises(ValueError, match="must be positive"):
        draw_roofline({}, 0.0, 1.0)


def test_every_diagram_is_cheap():
    MODEL_CONFIGS["biformer_tiny"]  # the models package is imported above: time the drawing only
    for draw in (draw_bra_levels, draw_gather_layout, draw_biformer_block, draw_biformer_pyramid,
                 lambda: draw_roofline({"a": (1e9, 1e8)}, 1e11, 1e10)):  # fmt: skip
        start = time.perf_counter()
        fig = draw()
        fig.canvas.draw()
        assert time.perf_counter() - start < 1.0
        plt.close(fig)
