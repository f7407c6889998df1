"""Checks for chapter 0, "How to use this book": the warm-up exercise."""

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
