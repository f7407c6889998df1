"""Checks for chapter 2, "A zoo of sparse attention patterns": window, sliding-window and routed token masks."""

from __future__ import annotations

import torch

from bralib.exercises import Case, exercise
from bralib.ops import masks


def _mask_problem(expected: torch.Tensor):
    """A verify function: a bool tensor of the right shape, then which (query, key) pair is wrong first."""

    def verify(got) -> str | None:
        if not isinstance(got, torch.Tensor):
            return f"expected a bool torch.Tensor, got {type(got).__name__}"
        if got.dtype != torch.bool:
            return f"expected dtype torch.bool, got {got.dtype} (compare with ==, combine with & and |)"
        if got.shape != expected.shape:
            return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        wrong = (got != expected).nonzero()
        if len(wrong) == 0:
            return None
        *batch, i, j = wrong[0].tolist()
        where = f"batch {batch[0]}, " if batch else ""
        should = "may" if expected[tuple(wrong[0])] else "may not"
        return (
            f"{len(wrong)} of {expected.numel()} entries are wrong; first at {where}query {i}, key {j}: "
            f"query {i} {should} attend to key {j}"
        )

    return verify


@exercise("window_mask")
def _window_mask():
    hint = "token n is at (n // width, n % width); two tokens share a window when (row // w, col // w) agree"
    for height, width, window, what in [
        (4, 4, 2, "a 4x4 grid of 2x2 windows"),
        (8, 8, 4, "an 8x8 grid of 4x4 windows"),
        (6, 9, 3, "a 6x9 grid (not square) of 3x3 windows"),
        (4, 8, 4, "a 4x8 grid: two 4x4 windows side by side"),
    ]:
        expected = masks.window_mask(height, width, window)
        yield Case(what, args=(height, width, window), verify=_mask_problem(expected), hint=hint)


@exercise("neighbourhood_mask")
def _neighbourhood_mask():
    hint = "the window's first row is row - window // 2, clamped to [0, height - window]; the same for columns"
    for height, width, window, what in [
        (5, 5, 3, "a 5x5 grid, 3x3 neighbourhoods"),
        (8, 8, 5, "an 8x8 grid, 5x5 neighbourhoods: border windows slide inwards"),
        (6, 10, 3, "a 6x10 grid (not square), 3x3 neighbourhoods"),
        (7, 7, 7, "a 7x7 grid and a 7x7 window: everyone sees everything"),
    ]:
        expected = masks.neighbourhood_mask(height, width, window)
        yield Case(what, args=(height, width, window), verify=_mask_problem(expected), hint=hint)


@exercise("routed_token_mask")
def _routed_token_mask():
    hint = (
        "find each token's region r = (row // (H/S)) * S + col // (W/S); query i sees key j when region(j) is in "
        "index[b, region(i)]"
    )
    gen = torch.Generator().manual_seed(0)
    for batch, height, width, n_win, topk, what in [
        (1, 4, 4, 2, 1, "a 4x4 grid, 2x2 regions, k=1"),
        (2, 6, 6, 3, 2, "two images, a 6x6 grid, 3x3 regions, k=2"),
        (1, 4, 8, 2, 3, "a 4x8 grid (not square): regions of 2x4 tokens, k=3"),
        (1, 6, 6, 3, 9, "k = S^2: every region routes to all regions"),
    ]:
        index = torch.rand(batch, n_win**2, n_win**2, generator=gen).argsort(-1)[..., :topk]  # random, distinct
        expected = masks.routed_mask(index, height, width, n_win)
        yield Case(what, args=(index, height, width, n_win), verify=_mask_problem(expected), hint=hint)


@exercise("two_layer_reach")
def _two_layer_reach():
    hint = "i reaches j through m when second[i, m] and first[m, j]: a product of the masks as floats, then > 0"
    height = width = 8
    gen = torch.Generator().manual_seed(3)
    index = torch.rand(1, 16, 16, generator=gen).argsort(-1)[..., :2]  # 4x4 regions of 2x2 tokens, 2 routed
    window, shifted = masks.window_mask(height, width, 4), masks.window_mask(height, width, 4, shift=2)
    sliding, routed = masks.neighbourhood_mask(height, width, 3), masks.routed_mask(index, height, width, 4)[0]
    for first, second, what in [
        (window, window, "window then window (8x8 grid, 4x4 windows): stays inside the window"),
        (window, shifted, "window then shifted window"),
        (masks.criss_cross_mask(height, width), masks.criss_cross_mask(height, width), "criss-cross twice"),
        (routed, sliding, "routed (not symmetric) then sliding window: the order matters"),
        (sliding, routed, "sliding window then routed"),
    ]:
        expected = float(((second.float() @ first.float()) > 0).float().mean())
        yield Case(what, args=(first, second), expected=expected, atol=1e-12, hint=hint)
