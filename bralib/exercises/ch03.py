"""Checks for chapter 3, "Regions and the routing graph": to_regions, per-head routing, and routing overlap."""

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


@exercise("per_head_routing_index")
def _per_head_routing_index():
    hint = (
        "for head h take channels h*C/heads:(h+1)*C/heads of q and k; region means; adjacency q_r @ k_r^T; "
        "torch.topk(..., topk, dim=-1).indices; stack the heads on dim 1"
    )
    for seed, (batch, height, width, channels, n_win, topk, heads, what) in enumerate([
        (1, 4, 4, 4, 2, 1, 1, "one head: the same as the shared routing"),
        (2, 8, 8, 8, 4, 3, 2, "two images, two heads of 4 channels, 4x4 regions, k=3"),
        (1, 6, 12, 12, 3, 4, 3, "a 6x12 map (not square), three heads, k=4"),
        (1, 14, 14, 16, 7, 4, 4, "S=7 as in BiFormer, four heads"),
    ]):  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64)
        k = torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64)
        per_head = [route_regions(q_h, k_h, n_win=n_win, topk=topk)[1]
                    for q_h, k_h in zip(q.chunk(heads, -1), k.chunk(heads, -1), strict=True)]  # fmt: skip
        expected = torch.stack(per_head, dim=1)  # (B, heads, S^2, k)
        yield Case(what, args=(q, k, n_win, topk, heads), expected=expected, hint=hint)


@exercise("routing_overlap")
def _routing_overlap():
    hint = "for each row: (row_a[:, None] == row_b[None, :]).any(-1).sum() / topk; then the mean over rows"
    gen = torch.Generator().manual_seed(5)
    same = torch.rand(2, 9, 9, generator=gen).argsort(-1)[..., :3]
    shuffled = same.gather(-1, torch.rand(2, 9, 3, generator=gen).argsort(-1))  # the same regions, other order
    other = torch.rand(2, 9, 9, generator=gen).argsort(-1)[..., :3]
    heads = torch.rand(1, 4, 49, 49, generator=gen).argsort(-1)[..., :4]
    for a, b, what in [
        (same, same, "a routing against itself: 1.0"),
        (same, shuffled, "the same regions listed in another order: still 1.0"),
        (same, other, "two random routings of 9 regions, k=3"),
        (heads[:, :1].expand(1, 4, 49, 4), heads, "one head's routing against four heads' (S=7, k=4)"),
        (torch.tensor([[0, 1]]), torch.tensor([[2, 3]]), "no region in common: 0.0"),
    ]:
        expected = float(((a[..., :, None] == b[..., None, :]).any(-1).sum(-1).float() / a.shape[-1]).mean())
        yield Case(what, args=(a, b), expected=expected, atol=1e-12, hint=hint)
