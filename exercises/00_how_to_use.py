"""Exercises for chapter 0, "How to use this book".

Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check tokens_to_attend
"""


def tokens_to_attend(height: int, width: int, n_win: int, topk: int) -> int:
    """How many key tokens one query attends to under BRA.

    The height x width map is split into n_win x n_win regions; each query attends to every token of the
    topk regions its own region routes to. Return that number of tokens, as an int.
    """
    raise NotImplementedError("fill in tokens_to_attend")
