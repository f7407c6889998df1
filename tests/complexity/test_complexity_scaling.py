"""Log-log slopes of counted multiply-adds against H*W: S = S* -> 4/3, fixed S -> 2, window -> 1."""

from __future__ import annotations

import pytest

from bralib.complexity import (
    counted_bra_macs,
    counted_window_macs,
    loglog_slope,
    optimal_regions_value,
    scaling_fixed_regions,
    scaling_optimal_regions,
    scaling_window,
)

SIDES = [7 * 2**j for j in range(2, 11)]  # 28 ... 7168 tokens per side


def test_optimal_regions_series_is_exactly_at_s_star():
    series = scaling_optimal_regions()
    for side, n_win in zip(series.sides, series.n_wins, strict=True):
        assert optimal_regions_value(side, side, 2) == pytest.approx(n_win, rel=1e-12)
        assert side % n_win == 0


def test_slope_at_s_star_is_four_thirds():
    series = scaling_optimal_regions()
    assert abs(series.slope() - 4 / 3) <= 0.03
    assert abs(series.slope(last=5) - 4 / 3) <= 0.01  # closer as the map grows


def test_slope_with_fixed_regions_tends_to_two():
    series = scaling_fixed_regions(SIDES)
    assert series.slope(last=4) == pytest.approx(2, abs=0.01)
    assert series.slope() < series.slope(last=4)  # linear terms still show at small maps


def test_slope_of_window_attention_is_one():
    assert scaling_window(SIDES).slope() == pytest.approx(1, abs=0.005)


def test_fake_count_equals_real_count():
    assert counted_bra_macs(28, 28, 32, 7, 4, fake=True) == counted_bra_macs(28, 28, 32, 7, 4, fake=False)
    assert counted_window_macs(28, 32, 7, fake=True) == counted_window_macs(28, 32, 7, fake=False)


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of window"):
        counted_window_macs(30, 16, 7)
    with pytest.raises(ValueError, match="two points"):
        loglog_slope([1], [1])
