"""Checks for chapter 0, "How to use this book": the warm-up exercise and a plan of regions for another input size."""

from __future__ import annotations

from bralib.exercises import Case, exercise

# Table 7 of the paper: tokens each query attends to, per stage of a 224x224 input (maps 56, 28, 14, 7).
TABLE7_ROWS = {
    "S=7, k=1,4,16,49": [(56, 7, 1, 64), (28, 7, 4, 64), (14, 7, 16, 64), (7, 7, 49, 49)],
    "S=8,4,2,1, k=2,2,2,1": [(56, 8, 2, 98), (28, 4, 2, 98), (14, 2, 2, 98), (7, 1, 1, 49)],
}


@exercise("tokens_to_attend")
def _tokens_to_attend():
    hint = "count the tokens in one region first, then multiply by the number of regions a query sees"
    for row, stages in TABLE7_ROWS.items():
        for size, n_win, topk, tokens in stages:
            yield Case(
                f"Table 7 ({row}): a {size}x{size} map, S={n_win}, k={topk} -> {tokens} tokens",
                args=(size, size),
                kwargs={"n_win": n_win, "topk": topk},
                expected=tokens,
                hint=hint,
            )
    # Not square: height and width must each be split S ways.
    yield Case("a 28x56 map, S=7, k=2", args=(28, 56), kwargs={"n_win": 7, "topk": 2}, expected=64, hint=hint)


def _plan_problem(image_size: int, tokens_per_query: int):
    """A verify function: three (n_win, topk) pairs that obey the rules of the docstring, any of them."""
    sides = [image_size // 4 // 2**stage for stage in range(3)]

    def verify(plan) -> str | None:
        if not isinstance(plan, list | tuple) or len(plan) != 3:
            return f"expected a list of three (n_win, topk) pairs, one per routed stage, got {plan!r}"
        for stage, (side, pair) in enumerate(zip(sides, plan, strict=True), start=1):
            if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(isinstance(v, int) for v in pair):
                return f"stage {stage}: expected a pair of ints (n_win, topk), got {pair!r}"
            n_win, topk = pair
            if n_win < 1 or side % n_win:
                return f"stage {stage}: n_win={n_win} does not divide the map's side {side}"
            if not 1 <= topk <= n_win * n_win:
                return f"stage {stage}: topk={topk} is not between 1 and n_win**2 = {n_win * n_win}"
            tokens = topk * (side // n_win) ** 2
            if tokens != tokens_per_query:
                where = f"stage {stage} ({side}x{side})"
                return f"{where}: S={n_win}, k={topk} gives {tokens} tokens per query, not {tokens_per_query}"
        return None

    return verify


@exercise("plan_regions")
def _plan_regions():
    hint = "for each stage side, try every n_win that divides it; the region holds (side // n_win)**2 tokens"
    for image_size, tokens, what in [
        (224, 64, "224x224, 64 tokens per query (the paper's setting)"),
        (512, 64, "512x512, 64 tokens per query: S = 7 no longer divides the maps"),
        (384, 36, "384x384, 36 tokens per query"),
        (256, 16, "256x256, 16 tokens per query"),
    ]:
        yield Case(what, args=(image_size, tokens), verify=_plan_problem(image_size, tokens), hint=hint)
