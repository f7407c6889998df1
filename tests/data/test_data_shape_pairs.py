"""``bralib.data.shape_pairs``: deterministic from the seed, and labels that say what the images show."""

from __future__ import annotations

import pytest
import torch

from bralib.data.shape_pairs import CELL, COLOURS, GRID, SHAPES, chebyshev, make_shape_pairs


def test_same_seed_same_images_other_seed_other_images():
    a, b = make_shape_pairs(64, seed=3), make_shape_pairs(64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.cells, b.cells)
    assert all(torch.equal(a.labels[n], b.labels[n]) for n in a.labels)
    assert not torch.equal(a.images, make_shape_pairs(64, seed=4).images)
    assert torch.equal(make_shape_pairs(80, seed=3).images[:64], a.images)  # image i depends on (seed, i) only


def test_labels_match_what_is_drawn():
    data = make_shape_pairs(200, seed=0, distractors=3)
    assert data.images.shape == (200, 3, 32, 32) and data.cells.shape == (200, 5)
    assert torch.equal(data.labels["same"], (data.colours[:, 0] == data.colours[:, 1]).long())
    assert torch.equal(data.labels["colour"], data.colours[:, 0])
    assert 0.35 < data.labels["same"].float().mean() < 0.65  # balanced
    for i in range(20):
        for j, shape in enumerate(["square", "ring", "cross", "cross", "cross"]):
            cell, colour = data.cells[i, j].item(), data.colours[i, j].item()
            top, left = (cell // GRID) * CELL, (cell % GRID) * CELL
            patch = data.images[i, :, top : top + CELL, left : left + CELL]
            ink = torch.from_numpy(SHAPES[shape]).bool()
            assert torch.allclose(patch[:, ink], torch.from_numpy(COLOURS[colour])[:, None].expand(3, int(ink.sum())))
            if not ink.all():
                assert patch[:, ~ink].max() < 0.25  # background noise only where the shape has no ink
        assert len(set(data.cells[i].tolist())) == 5  # one object per cell


def test_square_and_ring_are_far_apart():
    data = make_shape_pairs(300, seed=1, min_distance=6)
    distances = [chebyshev(a, b) for a, b in data.cells[:, :2].tolist()]
    assert min(distances) >= 6
    assert max(distances) == 7


def test_constructed_cases_and_bad_arguments():
    # A ring of another colour: label 0; the crosses' colours never matter.
    data = make_shape_pairs(500, seed=2)
    negatives = data.labels["same"] == 0
    assert (data.colours[negatives, 0] != data.colours[negatives, 1]).all()
    two = make_shape_pairs(100, seed=0, colours=2)
    assert set(two.colours.flatten().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="min_distance must be in"):
        make_shape_pairs(4, min_distance=8)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        make_shape_pairs(0)
    with pytest.raises(ValueError, match="colours must be in"):
        make_shape_pairs(4, colours=7)
