"""Checks for chapter 3, "Regions and the routing graph": to_regions, from_regions and the routing index."""

from __future__ import annotations

import torch

from bralib.exercises import Case, exercise
from bralib.ops import route_regions, to_regions

SHAPES = [  # (B, H, W, C, n_win, what)
    ((1, 4, 4, 1), 2, "a 4x4 map with one channel, 2x2 regions"),
    ((2, 6, 6, 3), 3, "two 6x6 maps with 3 channels, 3x3 regions"),
    ((1, 4, 6, 2), 2, "a 4x6 map (not square): regions of 2x3 tokens"),
    ((2, 14, 21, 4), 7, "14x21 maps, S=7 as in BiFormer: regions of 2x3 tokens"),
    ((1, 5, 5, 2), 1, "S=1: one region holds the whole map"),
]


def _map(shape, seed):
    # Distinct values, so any token put in the wrong place shows.
    return (
        torch.randperm(torch.Size(shape).numel(), generator=torch.Generator().manual_seed(seed)).reshape(shape).float()
    )


@exercise("to_regions")
def _to_regions():
    hint = "reshape to (B, S, H/S, S, W/S, C), permute to (B, S, S, H/S, W/S, C), reshape to (B, S*S, -1, C)"
    for seed, (shape, n_win, what) in enumerate(SHAPES):
        x = _map(shape, seed)
        yield Case(what, args=(x, n_win), expected=to_regions(x, n_win), hint=hint)


@exercise("from_regions")
def _from_regions():
    hint = "undo to_regions: reshape to (B, S, S, H/S, W/S, C), permute back to (B, S, H/S, S, W/S, C), reshape"
    for seed, (shape, n_win, what) in enumerate(SHAPES):
        x = _map(shape, seed)
        yield Case(what, args=(to_regions(x, n_win), n_win, shape[1], shape[2]), expected=x, hint=hint)


@exercise("routing_index")
def _routing_index():
    hint = (
        "q_r = to_regions(q, S).mean(2); k_r likewise; adjacency = q_r @ k_r.transpose(-1, -2); "
        "torch.topk(adjacency, topk, dim=-1).indices"
    )
    for seed, (batch, height, width, channels, n_win, topk, what) in enumerate([
        (1, 4, 4, 3, 2, 1, "a 4x4 map, 2x2 regions, k=1"),
        (2, 8, 8, 4, 4, 3, "two 8x8 maps, 4x4 regions, k=3"),
        (1, 6, 12, 5, 3, 4, "a 6x12 map (not square), 3x3 regions, k=4"),
        (1, 14, 14, 8, 7, 49, "k = S^2 = 49: every region, best first"),
    ]):  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64)
        k = torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64)
        expected = route_regions(q, k, n_win=n_win, topk=topk)[1]
        yield Case(what, args=(q, k, n_win, topk), expected=expected, hint=hint)
