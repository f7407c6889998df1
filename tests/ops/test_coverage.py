"""``bralib.ops.coverage``: the share of full-attention mass a sparse pattern keeps."""

from __future__ import annotations

import math

import pytest
import torch

from bralib.ops import coverage


def _qk(seed: int = 0, side: int = 8, channels: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, side, side, channels, generator=generator)
    k = torch.randn(2, side, side, channels, generator=generator)
    return q, k


def test_hand_computed_two_by_two_case():
    # Four tokens (2x2 grid, one token per region), one channel: every query puts mass (1, 2, 3, 4) / 10 on the keys.
    q = torch.ones(1, 2, 2, 1)
    k = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])).reshape(1, 2, 2, 1)
    probs = coverage.attention_probs(q, k, num_heads=1)
    assert torch.allclose(probs[0, 0], torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 4))
    masks = coverage.pattern_masks(q, k, num_heads=1, n_win=2, topk=1, probs=probs)
    local = coverage.mass_captured(probs, masks["local"])  # each token keeps itself
    assert torch.allclose(local, torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    assert coverage.mass_captured(probs, masks["bra"])[0].tolist() == pytest.approx([0.4] * 4)  # the largest key
    assert coverage.mass_captured(probs, masks["oracle"])[0].tolist() == pytest.approx([0.4] * 4)
    two = coverage.pattern_masks(q, k, num_heads=1, n_win=2, topk=2, probs=probs)
    assert coverage.mass_captured(probs, two["oracle"])[0].tolist() == pytest.approx([0.7] * 4)  # keys 3 and 4


def test_full_budget_keeps_all_mass():
    q, k = _qk()
    probs = coverage.attention_probs(q, k, num_heads=2)
    found = coverage.pattern_masks(q, k, num_heads=2, n_win=4, topk=16, probs=probs)
    for name in ("bra", "local", "random", "oracle", "window"):
        assert coverage.mass_captured(probs, found[name]).min().item() == pytest.approx(1.0, abs=1e-5), name
    assert coverage.mass_captured(probs, torch.ones(64, 64, dtype=torch.bool)).mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize("topk", [1, 2, 4, 9])
def test_oracle_bounds_every_region_routing(topk):
    q, k = _qk(seed=topk)
    probs = coverage.attention_probs(q, k, num_heads=2)
    found = coverage.pattern_masks(q, k, num_heads=2, n_win=4, topk=topk, probs=probs)
    oracle = coverage.mass_captured(probs, found["oracle"]).mean().item()
    for name in ("bra", "local", "random", "window"):
        if name in found:  # window exists where topk is a square
            assert coverage.mass_captured(probs, found[name]).mean().item() <= oracle + 1e-6, name
    keys = {name: mask.sum(-1).float().mean().item() for name, mask in found.items()}
    assert keys["bra"] == keys["local"] == keys["random"] == keys["oracle"] == topk * 4  # equal budget


def test_patterns_at_equal_budget_and_table():
    q, k = _qk()
    found = coverage.pattern_masks(q, k, num_heads=2, n_win=4, topk=4)
    assert {name: int(m.sum(-1).float().mean()) for name, m in found.items()} == {
        "bra": 16, "local": 16, "random": 16, "oracle": 16, "window": 16, "dilated": 16, "axial": 15,
    }  # fmt: skip
    rows = coverage.coverage_table(q, k, num_heads=2, n_win=4, topks=[1, 4, 16])
    assert sum(r["pattern"] == "axial" for r in rows) == 1
    assert all(0.0 <= r["mass"] <= 1.0 + 1e-6 for r in rows)
    uniform_share = {r["topk"]: r["mass"] for r in rows if r["pattern"] == "random"}
    assert uniform_share[16] == pytest.approx(1.0)


def test_region_mass_rows_sum_to_one_and_bad_inputs():
    q, k = _qk()
    probs = coverage.attention_probs(q, k, num_heads=4)
    mass = coverage.region_mass(probs, 8, 8, 4)
    assert torch.allclose(mass.sum(-1), torch.ones(2, 16))
    assert coverage.window_side(8, 8, 4, 3) is None and coverage.dilation_for(8, 8, 4, 3) is None
    assert coverage.window_side(8, 8, 4, 4) == 4 and coverage.dilation_for(8, 8, 4, 4) == 2
    with pytest.raises(ValueError, match="same shape"):
        coverage.attention_probs(q, k[..., :8], num_heads=2)
    with pytest.raises(ValueError, match="topk must be an integer"):
        coverage.random_index(1, 4, 17)
    assert math.isclose(coverage.mass_captured(probs, torch.eye(64, dtype=torch.bool)).sum().item(),
                        torch.diagonal(probs.mean(1), dim1=-2, dim2=-1).sum().item(), rel_tol=1e-5)  # fmt: skip
