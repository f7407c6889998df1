"""Checks for chapter 5, "How much does routing cost?": counting BRA's multiply-adds, choosing S, deriving S*."""

from __future__ import annotations

import sympy as sp

from bralib.complexity import counted_bra_macs
from bralib.complexity import symbolic as sy
from bralib.exercises import Case, exercise


@exercise("bra_macs")
def _bra_macs():
    hint = (
        "qkv: HW*C*3C; region means of x projected: S^2*C*2C; adjacency: S^4*C; token attention: "
        "HW * k*HW/S^2 * 2C; LCE: kernel^2*HW*C; output projection: HW*C^2 (averaging and top-k are not MACs)"
    )
    for height, width, channels, n_win, topk, kernel, what in [
        (56, 56, 64, 7, 1, 5, "BiFormer-T stage 1 at 224x224: 56x56 tokens, C=64, S=7, k=1"),
        (14, 14, 256, 7, 16, 5, "BiFormer-T stage 3: 14x14 tokens, C=256, S=7, k=16"),
        (24, 48, 32, 4, 3, 3, "a 24x48 map (not square), C=32, S=4, k=3, a 3x3 LCE"),
        (16, 16, 16, 4, 2, 0, "no LCE (kernel 0)"),
    ]:
        expected = counted_bra_macs(height, width, channels, n_win, topk, side_dwconv=kernel, fake=False)
        yield Case(what, args=(height, width, channels, n_win, topk), kwargs={"kernel": kernel}, expected=expected,
                   hint=hint)  # fmt: skip


def _paper_cost(side: int, channels: int, n_win: int, topk: int) -> float:
    return sy.evaluate(sy.paper_bra_flops(), H=side, W=side, C=channels, S=n_win, k=topk)


@exercise("best_n_win")
def _best_n_win():
    hint = "try every S that divides the side and has S*S >= k; keep the one with the smallest Eq. 8 cost"
    for side, channels, topk, what in [
        (56, 64, 4, "56x56 tokens, C=64, k=4"),
        (56, 64, 1, "56x56 tokens, C=64, k=1"),
        (64, 32, 16, "64x64 tokens, k=16"),
        (12, 8, 9, "a small 12x12 map where k=9 rules out S=1 and S=2"),
    ]:
        options = [s for s in range(1, side + 1) if side % s == 0 and s * s >= topk]
        expected = min(options, key=lambda s: _paper_cost(side, channels, s, topk))
        yield Case(what, args=(side, channels, topk), expected=expected, hint=hint)


@exercise("exact_routing_optimum")
def _exact_routing_optimum():
    hint = "F = 3*H*W*C**2 + S**4*C + 2*H*W*k*(H*W/S**2)*C; sp.solve(sp.diff(F, S), S) and keep the positive root"
    expected = (sy.k * (sy.H * sy.W) ** 2) ** sp.Rational(1, 6)

    def verify(got):
        if not isinstance(got, sp.Expr):
            return f"expected a sympy expression in H, W, C, k, got {type(got).__name__}"
        difference = sp.simplify(sp.expand_power_base(got - expected, force=True))
        if difference != 0:
            return f"got S* = {got}, but the minimum of the cost is at S* = {expected}"
        return None

    yield Case("S* with the adjacency counted as S^4*C multiply-adds (symbols H, W, C, k of bralib.complexity)",
               args=(sy.H, sy.W, sy.C, sy.k), verify=verify, hint=hint)  # fmt: skip


@exercise("attention_dominant_side")
def _attention_dominant_side():
    hint = "with side = m * S: 2 HW k (HW/S^2) C > 4 HW C^2 becomes m^2 > 2C / k; find the smallest such m"
    terms = sy.bra_terms()
    for channels, n_win, topk, what in [
        (64, 7, 1, "BiFormer-T stage 1's settings: C=64, S=7, k=1"),
        (128, 7, 4, "stage 2's settings: C=128, S=7, k=4"),
        (256, 7, 16, "stage 3's settings: C=256, S=7, k=16"),
        (16, 4, 2, "C=16, S=4, k=2"),
        (8, 3, 16, "many routed regions: attention dominates early"),
    ]:
        side = n_win
        while True:  # the experiment, done by the check: grow the map until attention costs more
            values = {sy.H: side, sy.W: side, sy.C: channels, sy.S: n_win, sy.k: topk}
            linear = terms["qkv_projection"].subs(values) + terms["output_projection"].subs(values)
            if terms["token_attention"].subs(values) > linear:
                break
            side += n_win
        yield Case(what, args=(channels, n_win, topk), expected=int(side), hint=hint)
