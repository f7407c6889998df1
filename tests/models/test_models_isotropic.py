"""The isotropic ablation family: equal parameters, equal cost, and local arms that are measurably local."""

from __future__ import annotations

import itertools

import pytest
import torch

import bralib
from bralib.data.shape_pairs import chebyshev, make_shape_pairs
from bralib.models.isotropic import ATTENTIONS, isotropic_macs, receptive_field

SPARSE = [a for a in ATTENTIONS if a not in ("full", "oracle")]
TASK_DISTANCE = 6  # shape-pairs puts the square and the ring at least 6 cells apart


def _model(attention: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return bralib.create_model(f"isotropic_{attention}", num_classes=8, **overrides)


def test_every_arm_builds_runs_and_has_the_same_parameters():
    images = make_shape_pairs(3, seed=0).images
    shapes = {}
    for attention in ATTENTIONS:
        model = _model(attention)
        assert model(images).shape == (3, 8)
        shapes[attention] = [(name, p.shape) for name, p in model.named_parameters()]
    assert all(s == shapes["full"] for s in shapes.values())  # same names, same shapes: same parameters
    assert sum(p.numel() for p in _model("bra").parameters()) == sum(p.numel() for p in _model("full").parameters())


def test_sparse_arms_cost_the_same_within_one_percent():
    macs = {a: isotropic_macs(_model(a))["total"] for a in ATTENTIONS}
    reference = macs["local"]
    for attention in SPARSE:
        assert abs(macs[attention] - reference) / reference < 0.01, (attention, macs[attention], reference)
    assert macs["full"] > 1.1 * reference  # the ceiling pays for all 64 keys
    deep = isotropic_macs(_model("bra", depth=2))
    assert deep["routing"] == 2 * 16 * 16 * 64 and deep["attention"] == 2 * 2 * 64 * 16 * 64


def _bridged(rf: torch.Tensor) -> int:
    """Largest cell distance between two input tokens that one output token sees together."""
    seen = [torch.nonzero(row).flatten().tolist() for row in rf]
    return max(chebyshev(a, b) for cells in seen for a, b in itertools.combinations(cells, 2))


def test_local_arms_cannot_bridge_the_task_distance_but_bra_and_full_can():
    image = make_shape_pairs(1, seed=5).images
    reach = {a: _bridged(receptive_field(_model(a), image)) for a in ("window", "swin", "local", "bra", "full")}
    assert reach["window"] == reach["swin"] == 3  # one block: its own 4x4 window
    assert reach["local"] == 5  # itself and its three nearest regions of 2x2 tokens
    assert max(reach["window"], reach["local"]) < TASK_DISTANCE
    assert reach["full"] == 7 and reach["bra"] >= TASK_DISTANCE


def test_receptive_field_grows_with_depth():
    image = make_shape_pairs(1, seed=5).images
    assert _bridged(receptive_field(_model("local", depth=2), image)) == 7  # why the family uses one block
    assert _bridged(receptive_field(_model("window", depth=3), image)) == 3  # windows never cross, however deep


def test_routing_is_exposed_and_bad_configs_are_refused():
    model = _model("bra")
    model(make_shape_pairs(2, seed=0).images)
    assert model.blocks[0].attn.last_index.shape == (2, 16, 4)
    with pytest.raises(ValueError, match="attention must be one of"):
        bralib.create_model("isotropic_bra", attention="sliding")
    with pytest.raises(ValueError, match="square number"):
        bralib.create_model("isotropic_window", topk=3)
    with pytest.raises(TypeError, match="unknown option"):
        bralib.create_model("isotropic_bra", depths=2)
