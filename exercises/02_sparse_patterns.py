"""Exercises for chapter 2, "A zoo of sparse attention patterns".

Every mask is an (N, N) bool tensor over the tokens of a height x width grid, numbered row-major
(token n is at row n // width, column n % width); mask[i, j] is True when query i may attend to key j.
Tags: difficulty, and kind (*transcription*, *design* or *experiment*, as in chapter 0). Check your functions
from the chapter's notebook or a terminal:

    bralib exercise check --chapter 2
"""

import torch


def window_mask(height: int, width: int, window: int) -> torch.Tensor:
    """[easy, design] Non-overlapping window attention (Swin): a token sees the tokens of its own window x window window.

    height and width are multiples of window. Returns an (N, N) bool tensor, N = height * width.
    """
    raise NotImplementedError("fill in window_mask")


def neighbourhood_mask(height: int, width: int, window: int) -> torch.Tensor:
    """[medium, design] Sliding-window attention: a token sees the window x window tokens around it.

    The window (odd size, at most min(height, width)) is centred on the query token; near a border it is slid
    inwards until it fits in the grid, so every query sees exactly window**2 keys. Returns (N, N) bool.
    """
    raise NotImplementedError("fill in neighbourhood_mask")


def routed_token_mask(index: torch.Tensor, height: int, width: int, n_win: int) -> torch.Tensor:
    """[medium, design] The token mask of bi-level routing.

    index: (B, n_win**2, topk) long, index[b, r] are the regions that region r routes to. The grid is cut into
    n_win x n_win regions numbered row-major. Token i may attend to token j when the region of j is among
    the regions routed from the region of i. Returns (B, N, N) bool.
    """
    raise NotImplementedError("fill in routed_token_mask")


def two_layer_reach(first: torch.Tensor, second: torch.Tensor) -> float:
    """[medium, experiment] How much of the map reaches a query through two attention layers.

    first, second: (N, N) bool masks of two layers applied one after the other (first, then second). After
    both, output token i depends on input token j when some token m has second[i, m] (layer 2: i attends to m)
    and first[m, j] (layer 1: m attended to j). Return the fraction of the N * N pairs (i, j) for which that
    holds, as a Python float.

    Then experiment on the 16x16 grid of the chapter: window then window; window then shifted window;
    criss-cross twice; the routed mask twice. Which reach the whole map in two layers, and why does Swin
    alternate plain and shifted windows? Does the order of two different layers matter?
    """
    raise NotImplementedError("fill in two_layer_reach")
