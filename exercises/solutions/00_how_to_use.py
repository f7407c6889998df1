"""Solutions for chapter 0, "How to use this book"."""


def tokens_to_attend(height: int, width: int, n_win: int, topk: int) -> int:
    """How many key tokens one query attends to under BRA: topk regions of (H/S) x (W/S) tokens each."""
    tokens_per_region = (height // n_win) * (width // n_win)
    return topk * tokens_per_region


def _stage_pair(side: int, n_win: int, tokens_per_query: int) -> tuple[int, int] | None:
    """(n_win, topk) if n_win works for a stage of this side, else None."""
    if side % n_win:
        return None
    region_tokens = (side // n_win) ** 2
    topk, rest = divmod(tokens_per_query, region_tokens)
    return (n_win, topk) if rest == 0 and 1 <= topk <= n_win * n_win else None


def plan_regions(image_size: int, tokens_per_query: int) -> list[tuple[int, int]]:
    """One S for all three stages when one exists (as BiFormer does), else the smallest S that works per stage.

    Why S = 7 cannot stay at 512: the stage sides are 128, 64 and 32, and 7 divides none of them (224 was chosen
    as 7 * 32). The dense-prediction configurations of the released code pad each map to a multiple of 7
    instead, paying for tokens that are not there.

    Which plan to pick: keeping one S for all stages, as BiFormer does, makes the regions shrink 2x per stage
    while k grows 4x, so the token budget stays fixed and the routing graph (S^4 C) stays the same size. At 512
    with 64 tokens that is S = 16 with k = 1, 4, 16 (regions of 8x8, 4x4, 2x2 tokens): BiFormer's plan, scaled.
    The smallest S per stage would give k = 1 everywhere: one routed region per query region, the least room
    for routing to choose; the largest S (one-token regions) makes the routing graph huge (S^4 C grows as the
    fourth power). A middle S trades the two, which is chapter 5's question.
    """
    sides = [image_size // 4 // 2**stage for stage in range(3)]
    for n_win in range(1, sides[-1] + 1):  # a common S must divide the smallest side
        plan = [_stage_pair(side, n_win, tokens_per_query) for side in sides]
        if all(plan):
            return plan
    plan = []
    for stage, side in enumerate(sides, start=1):
        pair = next((p for s in range(1, side + 1) if (p := _stage_pair(side, s, tokens_per_query))), None)
        if pair is None:
            raise ValueError(f"no (n_win, topk) gives {tokens_per_query} tokens per query on stage {stage}'s map")
        plan.append(pair)
    return plan
