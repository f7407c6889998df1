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
    """Every allowed S, its Eq. 8 cost, the cheapest."""
    tokens = side * side

    def cost(n_win: int) -> float:
        return 3 * tokens * channels**2 + 2 * n_win**4 * channels + 2 * tokens * topk * tokens / n_win**2 * channels

    return min((s for s in range(1, side + 1) if side % s == 0 and s * s >= topk), key=cost)


def exact_routing_optimum(H: sp.Symbol, W: sp.Symbol, C: sp.Symbol, k: sp.Symbol) -> sp.Expr:
    """Half the routing cost moves S* up by 2^(1/6): (k (HW)^2)^(1/6) instead of (k (HW)^2 / 2)^(1/6)."""
    S = sp.Symbol("S", positive=True)
    cost = 3 * H * W * C**2 + S**4 * C + 2 * H * W * k * (H * W / S**2) * C
    (root,) = [r for r in sp.solve(sp.diff(cost, S), S) if r.is_positive]
    return root
