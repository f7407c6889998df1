"""Solutions for chapter 5, "How much does routing cost?"."""

import sympy as sp


def bra_macs(height: int, width: int, channels: int, n_win: int, topk: int, kernel: int = 5) -> int:
    """Term by term, as in bralib.complexity.bra_terms (without the averaging's additions)."""
    tokens, regions = height * width, n_win * n_win
    qkv = tokens * channels * 3 * channels
    region_projection = regions * channels * 2 * channels  # S^2 region means of x -> region q and k
    adjacency = regions * regions * channels
    token_attention = tokens * topk * (tokens // regions) * 2 * channels  # Q K^T and A V over k*HW/S^2 keys
    lce = kernel * kernel * tokens * channels
    projection = tokens * channels * channels
    return qkv + region_projection + adjacency + token_attention + lce + projection


def best_n_win(side: int, channels: int, topk: int) -> int:
    """Every allowed S, its Eq. 8 cost, the cheapest.

    Why it differs from the paper's S* at 56x56, k = 4 (S* = (4 * 3136**2 / 2)**(1/6), about 16.4): S* is a
    real number, but regions must tile the map, so only divisors of 56 (1, 2, 4, 7, 8, 14, 28, 56) are allowed,
    and S*S >= k. The cheapest allowed S is the divisor on whichever side of S* costs less (here 14); the
    curve is flat near its minimum, so a nearby divisor loses little.
    """
    tokens = side * side

    def cost(n_win: int) -> float:
        return 3 * tokens * channels**2 + 2 * n_win**4 * channels + 2 * tokens * topk * tokens / n_win**2 * channels

    return min((s for s in range(1, side + 1) if side % s == 0 and s * s >= topk), key=cost)


def exact_routing_optimum(H: sp.Symbol, W: sp.Symbol, C: sp.Symbol, k: sp.Symbol) -> sp.Expr:
    """Half the routing cost moves S* up by 2^(1/6): (k (HW)^2)^(1/6) instead of (k (HW)^2 / 2)^(1/6).

    By how much it moves: a factor 2^(1/6), about 1.12, whatever H, W, C and k; at 56x56 with k = 1 from about
    13.0 to about 14.6 regions per side. Cheaper routing makes more, smaller regions worth it.
    """
    S = sp.Symbol("S", positive=True)
    cost = 3 * H * W * C**2 + S**4 * C + 2 * H * W * k * (H * W / S**2) * C
    (root,) = [r for r in sp.solve(sp.diff(cost, S), S) if r.is_positive]
    return root


def attention_dominant_side(channels: int, n_win: int, topk: int) -> int:
    """2 HW k (HW/S^2) C > 4 HW C^2  <=>  HW > 2 C S^2 / k: with side = m S, m^2 > 2C / k.

    So the answer is S * m with m the smallest whole number whose square exceeds 2C/k. BiFormer-T: stage 1
    (C = 64, k = 1) needs m^2 > 128, side 84 > 56; stage 2 (C = 128, k = 4) and stage 3 (C = 256, k = 16) need
    m^2 > 64 and > 32, sides 63 and 42, above 28 and 14. At 224x224 the projections cost more than the token
    attention in every routed stage: BRA's attention is cheap enough that the linear layers dominate, as the
    end of the chapter's section 8 says.
    """
    m = 1
    while m * m * topk <= 2 * channels:  # integers: no rounding of a square root
        m += 1
    return n_win * m
