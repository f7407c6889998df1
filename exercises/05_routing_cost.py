"""Exercises for chapter 5, "How much does routing cost?".

Costs are multiply-adds (one multiply-add = 1), as the paper, fvcore and bralib.complexity count. Tags:
difficulty, and kind (*transcription*, *design* or *experiment*, as in chapter 0). Check your functions from
the chapter's notebook or a terminal:

    bralib exercise check --chapter 5
"""

import sympy as sp


def bra_macs(height: int, width: int, channels: int, n_win: int, topk: int, kernel: int = 5) -> int:
    """[medium, transcription] Multiply-adds of one BiLevelRoutingAttention(channels, ..., side_dwconv=kernel) forward, as count_flops counts.

    One image of height x width tokens with `channels` channels (qk_dim = channels), n_win regions per side,
    topk routed regions, route_from="x" (region means of x, projected to region queries and keys). Count every
    multiply-add of the layer; averaging (additions) and top-k (comparisons) are not multiply-adds.
    """
    raise NotImplementedError("fill in bra_macs")


def best_n_win(side: int, channels: int, topk: int) -> int:
    """[easy, design] The regions per side S that minimises the paper's Eq. 8 cost on a side x side map.

    Eq. 8: 3*HW*C**2 + 2*S**4*C + 2*HW*k*(HW/S**2)*C. Only S that divide `side` (whole regions) and have
    S*S >= topk are allowed.
    """
    raise NotImplementedError("fill in best_n_win")


def exact_routing_optimum(H: sp.Symbol, W: sp.Symbol, C: sp.Symbol, k: sp.Symbol) -> sp.Expr:
    """[medium, transcription] S* (a sympy expression in H, W, C, k) when the region adjacency is counted as its true S**4 * C MACs.

    That is, minimise 3*H*W*C**2 + S**4*C + 2*H*W*k*(H*W/S**2)*C over S > 0 with sympy: differentiate, solve,
    keep the positive root. How does it differ from the paper's (k (HW)^2 / 2)^(1/6)?
    """
    raise NotImplementedError("fill in exact_routing_optimum")


def attention_dominant_side(channels: int, n_win: int, topk: int) -> int:
    """[medium, experiment] From which map size on does BRA's token attention cost more than its projections?

    Take a square side x side map with `channels` channels, n_win regions per side (fixed) and topk routed
    regions. Return the smallest side, a multiple of n_win, at which the token attention's multiply-adds,
    2 * HW * topk * (HW / n_win**2) * C, exceed those of the linear projections, qkv and output: 4 * HW * C**2.

    Find it as an experiment first: evaluate the two terms of bralib.complexity.symbolic.bra_terms() (or count
    real layers with bralib.complexity.counted_bra_macs) for growing sides; then explain the answer with
    algebra. Where do BiFormer-T's stages (56, 28, 14 tokens per side; C = 64, 128, 256; k = 1, 4, 16) stand?
    """
    raise NotImplementedError("fill in attention_dominant_side")
