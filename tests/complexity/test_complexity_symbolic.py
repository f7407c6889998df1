"""The sympy derivation of BRA's cost, the paper's printed Eq. 9, and agreement with counted multiply-adds."""

from __future__ import annotations

import pytest
import sympy as sp

from bralib.complexity import counted_bra_macs, symbolic
from bralib.complexity.symbolic import (
    PAPER_MINIMAL_FLOPS,
    PAPER_OPTIMAL_REGIONS,
    C,
    H,
    N,
    S,
    W,
    am_gm_minimum,
    bra_flops,
    bra_terms,
    evaluate,
    full_attention_flops,
    growth_exponent,
    in_tokens,
    k,
    minimal_flops,
    optimal_regions,
    paper_bra_flops,
    window_attention_flops,
)

CORRECTED_MINIMUM = 3 * H * W * C**2 + sp.Rational(3, 2) * C * k ** sp.Rational(2, 3) * (2 * H * W) ** sp.Rational(4, 3)


def _same(a: sp.Expr, b: sp.Expr) -> bool:
    return sp.simplify(sp.expand_power_base(a - b, force=True)) == 0


def test_optimal_regions_matches_the_paper():
    best = optimal_regions()
    assert _same(best, PAPER_OPTIMAL_REGIONS)
    assert sp.simplify(sp.diff(paper_bra_flops(), S).subs(S, best)) == 0


def test_printed_minimum_is_twice_too_large_in_its_second_term():
    best = minimal_flops()
    assert not _same(best, PAPER_MINIMAL_FLOPS)
    assert _same(best, CORRECTED_MINIMUM)
    excess = sp.simplify((PAPER_MINIMAL_FLOPS - 3 * H * W * C**2) / (best - 3 * H * W * C**2))
    assert excess == 2


def test_am_gm_agrees_with_calculus():
    bound, x_equal = am_gm_minimum(2 * C, 2 * k * (H * W) ** 2 * C)
    assert _same(3 * H * W * C**2 + bound, minimal_flops())
    assert _same(sp.sqrt(x_equal), optimal_regions())


def test_optimal_regions_rejects_costs_without_a_minimum():
    with pytest.raises(ValueError, match="stationary point"):
        optimal_regions(3 * H * W * C**2 + S**2 * C)  # grows with S: no positive stationary point


@pytest.mark.parametrize(
    ("flops", "exponent"),
    [
        (minimal_flops(), sp.Rational(4, 3)),
        (paper_bra_flops(S=7), 2),
        (full_attention_flops(), 2),
        (window_attention_flops(w=7), 1),
    ],
)
def test_growth_exponents_by_limit(flops, exponent):
    assert growth_exponent(in_tokens(flops)) == exponent
    ratio = sp.limit(sp.log(in_tokens(flops).subs(N, 2 * N) / in_tokens(flops)) / sp.log(2), N, sp.oo)
    assert sp.simplify(sp.expand_log(ratio, force=True)) == exponent  # log(4)/log(2) -> 2


def test_terms_and_evaluate():
    terms = bra_terms()
    assert set(terms) == {
        "qkv_projection", "region_averaging", "region_projection", "region_adjacency", "topk", "token_attention",
        "lce", "output_projection",
    }  # fmt: skip
    assert evaluate(terms["token_attention"], H=56, W=56, C=64, S=7, k=4) == 2 * 3136 * 4 * 64 * 64
    with pytest.raises(ValueError, match="needs values for"):
        evaluate(bra_flops(), H=56, W=56)
    with pytest.raises(ValueError, match="route_from"):
        bra_terms(route_from="q")


# BiFormer-T's three BRA stages at 224x224 (S = 7, k = 1, 4, 16), then other shapes and layouts.
AGREEMENT_SHAPES = [
    dict(height=56, width=56, channels=64, n_win=7, topk=1, num_heads=2),
    dict(height=28, width=28, channels=128, n_win=7, topk=4, num_heads=4),
    dict(height=14, width=14, channels=256, n_win=7, topk=16, num_heads=8),
    dict(height=56, width=56, channels=64, n_win=7, topk=4, num_heads=2),
    dict(height=32, width=32, channels=96, n_win=8, topk=8, num_heads=3),
    dict(height=24, width=48, channels=32, n_win=4, topk=3, num_heads=1),
    dict(height=28, width=28, channels=64, n_win=7, topk=4, num_heads=2, route_from="qk"),
]


@pytest.mark.parametrize("shape", AGREEMENT_SHAPES, ids=lambda s: "x".join(str(v) for v in s.values()))
def test_symbolic_matches_counted_within_one_percent(shape):
    route_from = shape.get("route_from", "x")
    counted = counted_bra_macs(**shape, fake=False)
    values = dict(H=shape["height"], W=shape["width"], C=shape["channels"], S=shape["n_win"], k=shape["topk"])
    terms = {name: evaluate(term, **values) for name, term in bra_terms(route_from=route_from).items()}
    total = sum(terms.values())
    assert abs(counted / total - 1) <= 0.01
    # The only difference is the region averaging: additions, not multiply-adds, invisible to FlopCounterMode.
    assert counted == total - terms["region_averaging"]


def test_symbolic_module_is_the_lazy_export():
    import bralib.complexity as complexity

    assert complexity.optimal_regions is symbolic.optimal_regions
