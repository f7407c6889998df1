"""Checks for chapter 4, "Gather, attend, enhance": the gather, per-head routed attention, the error against full."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bralib.exercises import Case, exercise
from bralib.ops import bra, route_regions
from bralib.ops.backends.gather import gather_kv


def _random_index(batch, n_win, topk, gen):
    """Distinct random regions per row, different for every image."""
    return torch.rand(batch, n_win**2, n_win**2, generator=gen).argsort(-1)[..., :topk]


@exercise("gather_regions")
def _gather_regions():
    hint = "kv_regions[torch.arange(B)[:, None, None], index] picks region index[b, r, t] of image b"
    gen = torch.Generator().manual_seed(0)
    for batch, n_win, tokens, channels, topk, what in [
        (1, 2, 3, 2, 1, "one image, 4 regions of 3 tokens, k=1"),
        (2, 3, 4, 5, 2, "two images with different indices, 9 regions, k=2"),
        (3, 2, 6, 1, 4, "three images, k = S^2 = 4"),
    ]:
        kv = torch.randn(batch, n_win**2, tokens, channels, generator=gen)
        index = _random_index(batch, n_win, topk, gen)
        yield Case(what, args=(kv, index), expected=gather_kv(kv, index), hint=hint)


def _per_head_reference(q, k, v, index, n_win):
    """Each head on its own channels, with its own index, through bralib's dense masked reference."""
    heads, channels = index.shape[1], q.shape[-1]
    per_head = zip(q.chunk(heads, -1), k.chunk(heads, -1), v.chunk(heads, -1), strict=True)
    outs = [
        bra(q_h, k_h, v_h, num_heads=1, n_win=n_win, topk=index.shape[-1], scale=(channels // heads) ** -0.5,
            backend="reference", routing_index=index[:, h])
        for h, (q_h, k_h, v_h) in enumerate(per_head)
    ]  # fmt: skip
    return torch.cat(outs, dim=-1)


@exercise("per_head_routed_attention")
def _per_head_routed_attention():
    hint = (
        "split q, k, v regions into heads: (B, heads, S^2, n, C/heads); gather with a (B,1,1,1) batch number, a "
        "(1,heads,1,1) head number and the index; merge (topk, n); softmax(q k^T * (C/heads)**-0.5) @ v; merge heads"
    )
    for seed, (batch, height, width, c_qk, c_v, n_win, topk, heads, what) in enumerate([
        (1, 4, 4, 4, 4, 2, 1, 1, "one head, a 4x4 map, 2x2 regions, k=1"),
        (2, 6, 6, 8, 8, 3, 2, 2, "two heads with different routings, two images, k=2"),
        (1, 4, 8, 8, 6, 2, 3, 2, "a 4x8 map (not square), 8 query/key and 6 value channels"),
        (2, 6, 6, 12, 12, 3, 2, 4, "four heads: the scale is (C/heads)**-0.5"),
    ]):  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(batch, height, width, c_qk, generator=gen, dtype=torch.float64)
        k = torch.randn(batch, height, width, c_qk, generator=gen, dtype=torch.float64)
        v = torch.randn(batch, height, width, c_v, generator=gen, dtype=torch.float64)
        index = torch.stack([_random_index(batch, n_win, topk, gen) for _ in range(heads)], dim=1)
        expected = _per_head_reference(q, k, v, index, n_win)
        yield Case(what, args=(q, k, v, index, n_win), expected=expected, atol=1e-9, rtol=1e-7, hint=hint)
    # The same index in every head: the chapter's routed_attention, i.e. bra with a shared routing.
    gen = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(1, 6, 6, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    shared = route_regions(q, k, n_win=3, topk=2)[1]
    expected = bra(q, k, v, num_heads=2, n_win=3, topk=2, scale=4**-0.5, backend="reference", routing_index=shared)
    yield Case("the same routing in both heads: equals the chapter's routed_attention",
               args=(q, k, v, shared[:, None].expand(1, 2, 9, 2), 3), expected=expected, atol=1e-9, rtol=1e-7,
               hint=hint)  # fmt: skip


def _errors(q, k, v, n_win, num_heads):
    batch, height, width, channels = q.shape
    scale = (channels // num_heads) ** -0.5
    split = [t.flatten(1, 2).unflatten(-1, (num_heads, -1)).transpose(1, 2) for t in (q, k, v)]
    full = F.scaled_dot_product_attention(*split, scale=scale).transpose(1, 2).flatten(-2).reshape(v.shape)
    return [
        float((bra(q, k, v, num_heads=num_heads, n_win=n_win, topk=kk, scale=scale, backend="reference") - full).norm()
              / full.norm())
        for kk in range(1, n_win * n_win + 1)
    ]  # fmt: skip


@exercise("error_vs_full_attention")
def _error_vs_full_attention():
    hint = (
        "full = multi-head attention over all HW tokens with scale (C/heads)**-0.5; for each topk in 1..S^2, "
        "bra(q, k, v, num_heads=..., n_win=..., topk=topk, scale=...) (content routing by default); "
        "float((out - full).norm() / full.norm())"
    )
    for seed, (batch, height, width, channels, n_win, heads, what) in enumerate([
        (1, 4, 4, 4, 2, 1, "a 4x4 map, 2x2 regions, one head"),
        (2, 6, 6, 8, 3, 2, "two images, 3x3 regions, two heads"),
        (1, 6, 9, 4, 3, 2, "a 6x9 map (not square)"),
    ]):  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(batch, height, width, channels, generator=gen, dtype=torch.float64) for _ in range(3))
        expected = _errors(q, k, v, n_win, heads)

        def verify(got, expected=expected):
            if not isinstance(got, list) or not all(isinstance(e, float) for e in got):
                return f"expected a list of {len(expected)} Python floats, got {type(got).__name__}"
            if len(got) != len(expected):
                return f"expected {len(expected)} errors (topk = 1 .. S^2), got {len(got)}"
            for topk, (g, e) in enumerate(zip(got, expected, strict=True), start=1):
                if abs(g - e) > 1e-7 + 1e-6 * abs(e):
                    return f"topk={topk}: expected a relative error of {e:.6g}, got {g:.6g}"
            return None

        yield Case(what, args=(q, k, v, n_win, heads), verify=verify, hint=hint)
