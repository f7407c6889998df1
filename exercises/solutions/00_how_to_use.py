"""Solutions for chapter 0, "How to use this book"."""


def tokens_to_attend(height: int, width: int, n_win: int, topk: int) -> int:
    """How many key tokens one query attends to under BRA: topk regions of (H/S) x (W/S) tokens each."""
    tokens_per_region = (height // n_win) * (width // n_win)
    return topk * tokens_per_region
