"""Exercises for chapter 0, "How to use this book".

Each exercise says how hard it is and what kind it is: *transcription* (write again what the chapter showed),
*design* (work out something the chapter did not show) or *experiment* (build a measurement, then use it to
answer a question). Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check --chapter 0
"""


def tokens_to_attend(height: int, width: int, n_win: int, topk: int) -> int:
    """[easy, transcription] How many key tokens one query attends to under BRA.

    The height x width map is split into n_win x n_win regions; each query attends to every token of the
    topk regions its own region routes to. Return that number of tokens, as an int.
    """
    raise NotImplementedError("fill in tokens_to_attend")


def plan_regions(image_size: int, tokens_per_query: int) -> list[tuple[int, int]]:
    """[medium, design] Choose (n_win, topk) for BiFormer's three routed stages at another input size.

    Stages 1-3 work on square maps of image_size // 4, // 8 and // 16 tokens per side (image_size is a
    multiple of 32). For each stage return a pair (n_win, topk) such that

    * n_win divides the stage's side (whole regions: no padding),
    * 1 <= topk <= n_win**2, and
    * every query attends to exactly ``tokens_per_query`` tokens: topk * (side // n_win)**2 == tokens_per_query.

    Any plan that meets the rules passes. Try image_size=512 with 64 tokens: why can S = 7, BiFormer's choice
    at 224, not be kept? Which of the valid plans would you pick, and why?
    """
    raise NotImplementedError("fill in plan_regions")
