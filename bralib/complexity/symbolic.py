"""FLOPs of full, window and bi-level routing attention as sympy expressions, and BRA's optimal S.

Convention: one multiply-add = 1 FLOP, as the paper and fvcore count (see :mod:`bralib.complexity.counting`).
Every cost below is for one image of H x W tokens with C channels. The number of heads never changes a
matmul's multiply-adds (h heads of C/h channels do the work of one head of C channels), so no formula here
takes heads; heads only multiply the element-wise softmax, which the convention does not count.

Symbols: ``H, W`` (tokens per side), ``C`` (channels), ``S`` (regions per side), ``k`` (routed regions),
``w`` (window side), ``N`` (tokens H*W, for asymptotics).

The paper's Eq. 8-9 (``paper_bra_flops``, ``PAPER_OPTIMAL_REGIONS``, ``PAPER_MINIMAL_FLOPS``) keep three terms:
qkv projection, routing and token attention. :func:`bra_terms` has every term of
:class:`bralib.ops.BiLevelRoutingAttention`'s forward, so it can be compared with counted multiply-adds.
"""

from __future__ import annotations

import sympy as sp

H, W, C, S, k, w = sp.symbols("H W C S k w", positive=True)
N = sp.Symbol("N", positive=True)  # H*W tokens

__all__ = [
    "C", "H", "N", "PAPER_MINIMAL_FLOPS", "PAPER_OPTIMAL_REGIONS", "S", "W", "am_gm_minimum", "bra_flops",
    "bra_terms", "evaluate", "full_attention_flops", "full_attention_terms", "growth_exponent", "in_tokens",
    "k", "minimal_flops", "optimal_regions", "paper_bra_flops", "w", "window_attention_flops",
    "window_attention_terms",
]  # fmt: skip

# The paper's printed results (Eq. 9), typed in as printed, to be checked against the derivation.
PAPER_OPTIMAL_REGIONS = (k / 2 * (H * W) ** 2) ** sp.Rational(1, 6)
PAPER_MINIMAL_FLOPS = 3 * H * W * C**2 + 3 * C * k ** sp.Rational(2, 3) * (2 * H * W) ** sp.Rational(4, 3)


def full_attention_terms(H: sp.Expr = H, W: sp.Expr = W, C: sp.Expr = C) -> dict[str, sp.Expr]:
    """Global self-attention over H*W tokens: every query scores every key (Q K^T) and mixes every value."""
    tokens = H * W
    return {
        "qkv_projection": 3 * tokens * C**2,
        "token_attention": 2 * tokens**2 * C,  # Q K^T and A V: (HW x C) @ (C x HW), (HW x HW) @ (HW x C)
        "output_projection": tokens * C**2,
    }


def window_attention_terms(H: sp.Expr = H, W: sp.Expr = W, C: sp.Expr = C, w: sp.Expr = w) -> dict[str, sp.Expr]:
    """Swin-style window attention: each token attends to the w*w tokens of its own window."""
    tokens = H * W
    return {
        "qkv_projection": 3 * tokens * C**2,
        "token_attention": 2 * tokens * w**2 * C,
        "output_projection": tokens * C**2,
    }


def bra_terms(
    H: sp.Expr = H,
    W: sp.Expr = W,
    C: sp.Expr = C,
    S: sp.Expr = S,
    k: sp.Expr = k,
    *,
    qk_dim: sp.Expr | None = None,
    kernel: int = 5,
    route_from: str = "x",
) -> dict[str, sp.Expr]:
    """Every term of ``BiLevelRoutingAttention`` (qkv, routing, token attention, LCE, output projection).

    Args:
        H, W, C, S, k: tokens per side, channels, regions per side, routed regions (numbers or symbols).
        qk_dim: query/key channels (default C).
        kernel: LCE depthwise kernel size (0: no LCE).
        route_from: ``"x"`` (bralib's default: average the tokens of x per region, then project the S*S
            means to region queries and keys) or ``"qk"`` (the released code: average q and k per region).

    Returns:
        {term: multiply-adds}. ``region_averaging`` is additions (one per element averaged), kept because
        the paper's algorithm has the step; ``topk`` compares numbers and costs no multiply-adds (0).
    """
    if route_from not in ("x", "qk"):
        raise ValueError(f"route_from must be 'x' or 'qk', got {route_from!r}")
    qk = C if qk_dim is None else qk_dim
    tokens, regions = H * W, S**2
    per_region = tokens / regions  # tokens in one region
    return {
        "qkv_projection": tokens * C * (2 * qk + C),
        "region_averaging": tokens * C if route_from == "x" else 2 * tokens * qk,
        "region_projection": regions * C * 2 * qk if route_from == "x" else sp.Integer(0),
        "region_adjacency": regions**2 * qk,  # (S^2 x qk) @ (qk x S^2)
        "topk": sp.Integer(0),
        "token_attention": tokens * k * per_region * (qk + C),  # each query: k*HW/S^2 keys, Q K^T then A V
        "lce": kernel**2 * tokens * C,
        "output_projection": tokens * C**2,
    }


def _total(terms: dict[str, sp.Expr]) -> sp.Expr:
    return sp.Add(*terms.values())


def full_attention_flops(H: sp.Expr = H, W: sp.Expr = W, C: sp.Expr = C) -> sp.Expr:
    return _total(full_attention_terms(H, W, C))


def window_attention_flops(H: sp.Expr = H, W: sp.Expr = W, C: sp.Expr = C, w: sp.Expr = w) -> sp.Expr:
    return _total(window_attention_terms(H, W, C, w))


def bra_flops(H: sp.Expr = H, W: sp.Expr = W, C: sp.Expr = C, S: sp.Expr = S, k: sp.Expr = k, **kwargs) -> sp.Expr:
    """Sum of :func:`bra_terms` (same arguments)."""
    return _total(bra_terms(H, W, C, S, k, **kwargs))


def paper_bra_flops(H: sp.Expr = H, W: sp.Expr = W, C: sp.Expr = C, S: sp.Expr = S, k: sp.Expr = k) -> sp.Expr:
    """The paper's Eq. 8: 3HWC^2 (qkv) + 2(S^2)^2 C (routing) + 2HW k (HW/S^2) C (token attention)."""
    return 3 * H * W * C**2 + 2 * (S**2) ** 2 * C + 2 * H * W * k * (H * W / S**2) * C


def optimal_regions(flops: sp.Expr | None = None, S: sp.Symbol = S) -> sp.Expr:
    """S* that minimises ``flops`` over S > 0, derived by calculus (default: the paper's Eq. 8).

    Differentiates in S, solves dF/dS = 0 for its positive root, and checks that d^2F/dS^2 > 0 there, so the
    stationary point is a minimum. Raises ValueError when there is not exactly one positive stationary
    point or the second derivative cannot be shown positive.
    """
    flops = paper_bra_flops() if flops is None else flops
    slope = sp.diff(flops, S)
    roots = [root for root in sp.solve(sp.Eq(slope, 0), S) if root.is_positive]
    if len(roots) != 1:
        raise ValueError(f"expected one positive stationary point of dF/dS = {slope}, found {roots}")
    best = sp.simplify(roots[0])
    curvature = sp.simplify(sp.diff(flops, S, 2).subs(S, best))
    if not curvature.is_positive:
        raise ValueError(f"d2F/dS2 at S* = {best} is {curvature}: not shown positive, so S* is not a minimum")
    return best


def minimal_flops(flops: sp.Expr | None = None, S: sp.Symbol = S) -> sp.Expr:
    """``flops`` at S = :func:`optimal_regions` (default: the paper's Eq. 8), simplified."""
    flops = paper_bra_flops() if flops is None else flops
    return sp.simplify(flops.subs(S, optimal_regions(flops, S)))


def am_gm_minimum(a: sp.Expr, b: sp.Expr, x: sp.Symbol | None = None) -> tuple[sp.Expr, sp.Expr]:
    """The AM-GM bound of a x^2 + b / x for x > 0 (the paper's route, with x = S^2).

    Split b/x into two halves: a x^2 + b/(2x) + b/(2x) >= 3 (a x^2 * b/(2x) * b/(2x))^(1/3) = 3 (a b^2 / 4)^(1/3),
    with equality iff the three parts are equal, a x^2 = b/(2x), i.e. x^3 = b / (2a). Returns (bound, x at
    equality).
    """
    x = sp.Symbol("x", positive=True) if x is None else x
    parts = (a * x**2, b / (2 * x), b / (2 * x))
    product = sp.simplify(parts[0] * parts[1] * parts[2])  # x cancels: the bound does not depend on x
    if product.has(x):
        raise ValueError(f"the AM-GM product {product} still depends on {x}")
    bound = 3 * sp.cbrt(product)
    equality = sp.solve(sp.Eq(parts[0], parts[1]), x)
    return sp.simplify(bound), sp.simplify(equality[0])


def in_tokens(expr: sp.Expr) -> sp.Expr:
    """Rewrite an expression of H and W (through H*W only) in N = H*W tokens."""
    rewritten = sp.simplify(sp.expand_power_base(expr.subs(H, N / W), force=True))
    if rewritten.has(W):
        raise ValueError(f"{expr} depends on H and W separately, not only on H*W")
    return rewritten


def growth_exponent(expr: sp.Expr, var: sp.Symbol = N) -> sp.Expr:
    """lim_{var -> oo} log(expr) / log(var): the p of expr = Theta(var^p), by a sympy limit."""
    return sp.limit(sp.log(expr) / sp.log(var), var, sp.oo)


def evaluate(expr: sp.Expr, **values: float) -> float:
    """``expr`` with symbols given by name (``H=56, W=56, C=64, S=7, k=4``) as a float; all must be given."""
    symbols = {symbol.name: symbol for symbol in expr.free_symbols}
    missing = sorted(set(symbols) - set(values))
    if missing:
        raise ValueError(f"evaluate needs values for {missing} (got {sorted(values)})")
    return float(expr.subs({symbols[name]: value for name, value in values.items() if name in symbols}))
