"""bralib.viz.routing: region geometry, what draw_routing / draw_token_attention draw, and the sample features."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from bralib.ops import route_regions
from bralib.viz import routing as viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _picture(height=56, width=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- inputs and geometry


def test_as_image_accepts_the_documented_layouts():
    rgb = _picture(8, 12)
    as_float = viz.as_image(rgb)
    assert as_float.shape == (8, 12, 3) and as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, rgb / 255.0, rtol=1e-6)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0  # torch's (3, H, W)
    np.testing.assert_allclose(viz.as_image(chw), as_float, rtol=1e-6)
    assert viz.as_image(np.zeros((8, 12, 1))).shape == (8, 12)
    assert viz.as_image(np.zeros((8, 12))).shape == (8, 12)
    assert viz.as_image(np.full((2, 2, 3), 3.0)).max() == 1.0  # out-of-range floats are clipped


@pytest.mark.parametrize("shape", [(8,), (8, 12, 4), (2, 8, 12, 3)])
def test_as_image_names_the_allowed_shapes(shape):
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\), \(H, W, 1\), \(3, H, W\) or \(H, W\)"):
        viz.as_image(np.zeros(shape))


def test_as_index_takes_one_image_and_checks_it():
    index = torch.arange(16 * 3).reshape(1, 16, 3) % 16
    assert viz.as_index(index, 4).shape == (16, 3)
    with pytest.raises(ValueError, match=r"\(n_win\*\*2, topk\) = \(9, topk\) for n_win=3"):
        viz.as_index(index, 3)
    with pytest.raises(ValueError, match=r"\(n_win\*\*2, topk\)"):
        viz.as_index(torch.zeros(2, 16, 3, dtype=torch.long), 4)  # a batch of two images
    with pytest.raises(ValueError, match=r"region numbers in \[0, 16\)"):
        viz.as_index(np.full((16, 2), 16), 4)


def test_region_box_is_row_major_and_scales_with_the_picture():
    assert viz.region_box(0, 7, 112, 112) == (0.0, 0.0, 16.0, 16.0)
    assert viz.region_box(9, 7, 112, 112) == (32.0, 16.0, 16.0, 16.0)  # row 1, column 2
    assert viz.region_box(5, 4, 60, 100) == (25.0, 15.0, 25.0, 15.0)  # not square: W/S by H/S
    with pytest.raises(ValueError, match=r"region must be a region number in \[0, n_win\*\*2\) = \[0, 49\)"):
        viz.region_box(49, 7, 112, 112)


# ---------------------------------------------------------------- draw_routing


def test_draw_routing_outlines_exactly_the_routed_regions_in_rank_order():
    n_win, query = 4, 6
    index = torch.tensor([[(r + t * 5) % 16 for t in range(3)] for r in range(16)])  # (16, 3)
    picture = _picture(64, 96)
    drawing = viz.draw_routing(picture, index, n_win, query)
    expected = index[query].tolist()
    assert list(drawing.routed) == expected  # the rank order of the index
    for region, patch in drawing.routed.items():
        x, y, w, h = viz.region_box(region, n_win, 64, 96)
        px, py = patch.get_xy()
        # Each outline sits inside its own region (a small inset keeps neighbours' outlines apart).
        assert x <= px < px + patch.get_width() <= x + w and y <= py < py + patch.get_height() <= y + h
        assert patch.get_width() > 0.8 * w and patch.get_height() > 0.8 * h
        assert patch in drawing.ax.patches
    assert drawing.query.get_xy() == viz.region_box(query, n_win, 64, 96)[:2]
    assert [label.get_text() for label in drawing.labels] == ["1", "2", "3"]
    assert len(drawing.grid) == 2 * (n_win - 1)
    assert drawing.ax.get_title() == f"region {query} routes to k=3"


def test_draw_routing_shades_every_region_but_the_routed_ones():
    index = route_regions(*(torch.randn(1, 14, 14, 4),) * 2, n_win=7, topk=4)[1]
    drawing = viz.draw_routing(_picture(112, 112), index, 7, 24, shade=0.5)
    alpha = drawing.shade.get_array()[..., 3]  # (7, 7) opacity of the veil, one cell per region
    routed = set(index[0, 24].tolist())
    for region in range(49):
        assert alpha[divmod(region, 7)] == (0.0 if region in routed else 0.5)
    no_veil = viz.draw_routing(_picture(112, 112), index, 7, 24, shade=0, grid=False, ranks=False)
    assert no_veil.shade is None and no_veil.grid == [] and no_veil.labels == []


def test_draw_routing_draws_into_a_given_axes_and_accepts_tensors():
    fig, axes = plt.subplots(1, 2)
    picture = torch.rand(3, 32, 32)  # torch layout
    index = np.tile(np.arange(4), (4, 1))  # numpy index, (S^2, topk) = (4, 4): everything
    drawing = viz.draw_routing(picture, index, 2, 3, axes[1], title="all")
    assert drawing.ax is axes[1] and axes[1].get_title() == "all" and not axes[0].patches
    assert sorted(drawing.routed) == [0, 1, 2, 3]
    assert drawing.image.get_extent() == [0, 32, 32, 0]


def test_draw_routing_rejects_a_bad_query_region():
    index = torch.zeros(16, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"query_region must be a region number in \[0, n_win\*\*2\) = \[0, 16\)"):
        viz.draw_routing(_picture(), index, 4, 16)


# ---------------------------------------------------------------- draw_token_attention and the grid


def test_draw_token_attention_shows_the_weights_and_marks_the_query():
    weights = torch.zeros(8, 8)
    weights[:4, 4:] = torch.softmax(torch.randn(16), 0).reshape(4, 4)  # one routed 4x4 region
    drawing = viz.draw_token_attention(_picture(64, 64), weights, (1, 6), n_win=2)
    shown = drawing.heatmap.get_array()
    np.testing.assert_allclose(shown.filled(0), weights.numpy())
    assert int((~shown.mask).sum()) == 16  # zero weights are left transparent
    assert drawing.heatmap.get_extent() == [0, 64, 64, 0]  # the 8x8 token grid spans the 64x64 picture
    x, y = drawing.marker.get_data()
    assert (x[0], y[0]) == (6.5 * 8, 1.5 * 8)  # the centre of token (1, 6), in pixels
    assert len(drawing.grid) == 2
    flat = viz.draw_token_attention(_picture(64, 64), weights.flatten(), 14, grid_shape=(8, 8))
    np.testing.assert_allclose(flat.heatmap.get_array().filled(0), weights.numpy())
    assert flat.ax.get_title() == "attention of token (1, 6)"


def test_draw_token_attention_errors_are_clear():
    with pytest.raises(ValueError, match="flat weights of 64 tokens need grid_shape"):
        viz.draw_token_attention(_picture(), np.ones(64), 0)
    with pytest.raises(ValueError, match=r"query_token must lie in the 8x8 token grid"):
        viz.draw_token_attention(_picture(), np.ones((8, 8)), (8, 0))


def test_draw_regions_numbers_every_region():
    ax = viz.draw_regions(_picture(), 3)
    numbers = sorted(int(text.get_text()) for text in ax.texts)
    assert numbers == list(range(9))
    x, y = ax.texts[4].get_position()  # region 4 is the centre one
    assert (x, y) == (28.0, 28.0)


# ---------------------------------------------------------------- sample picture and features


def test_sample_image_is_a_small_float_square():
    pytest.importorskip("skimage")
    picture = viz.sample_image("coffee", 28)
    assert picture.shape == (28, 28, 3) and picture.dtype == np.float32
    assert 0 <= picture.min() and picture.max() <= 1 and picture.std() > 0.05
    with pytest.raises(ValueError, match=r"name must be one of \('astronaut', 'coffee', 'chelsea'\)"):
        viz.sample_image("lena")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        viz.sample_image("coffee", 0)


def test_simple_features_route_alike_regions_to_each_other():
    # Left half reddish, right half bluish, with texture everywhere: every region's top-4 stays in its half.
    rng = np.random.default_rng(0)
    picture = np.zeros((32, 32, 3), dtype=np.float32)
    picture[:, :16] = [0.8, 0.2, 0.2]
    picture[:, 16:] = [0.2, 0.3, 0.8]
    picture = np.clip(picture + rng.normal(0, 0.05, picture.shape), 0, 1)
    features = viz.simple_features(picture)
    assert features.shape == (1, 32, 32, 5) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(1, 32, 32))
    _, index = route_regions(features, features, n_win=4, topk=4)
    column_of = index[0] % 4  # (16, 4): region column of every routed region
    own_half = (torch.arange(16) % 4 >= 2)[:, None]
    assert torch.equal(column_of >= 2, own_half.expand(-1, 4))
    with pytest.raises(ValueError, match=r"needs a colour image \(H, W, 3\)"):
        viz.simple_features(np.zeros((8, 8)))


def test_the_names_are_exported_lazily_from_bralib_viz():
    import bralib.viz

    for name in ("draw_routing", "draw_token_attention", "draw_regions", "draw_region_grid", "sample_image",
                 "simple_features"):  # fmt: skip
        assert getattr(bralib.viz, name) is getattr(viz, name)
