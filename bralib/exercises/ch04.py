"""Checks for chapter 4, "Gather, attend, enhance": the gather, routed multi-head attention, and the LCE."""

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


@exercise("routed_attention")
def _routed_attention():
    hint = (
        "q_r = to_regions(q, S); gather the k and v regions and merge (topk, n) into one key axis; split channels "
        "into heads; softmax(q k^T * (C/heads)**-0.5) over the keys; @ v; merge heads; from_regions"
    )
    for seed, (batch, height, width, c_qk, c_v, n_win, topk, heads, what) in enumerate([
        (1, 4, 4, 4, 4, 2, 1, 1, "one head, a 4x4 map, 2x2 regions, k=1"),
        (2, 6, 6, 8, 8, 3, 2, 2, "two heads, two 6x6 maps, 3x3 regions, k=2"),
        (1, 4, 8, 8, 6, 2, 3, 2, "a 4x8 map (not square), 8 query/key and 6 value channels"),
        (2, 6, 6, 12, 12, 3, 2, 4, "four heads: the scale is (C/heads)**-0.5, not C**-0.5"),
        (1, 6, 6, 4, 4, 3, 9, 2, "k = S^2: every region (equals full attention)"),
    ]):  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(batch, height, width, c_qk, generator=gen, dtype=torch.float64)
        k = torch.randn(batch, height, width, c_qk, generator=gen, dtype=torch.float64)
        v = torch.randn(batch, height, width, c_v, generator=gen, dtype=torch.float64)
        index = route_regions(q, k, n_win=n_win, topk=topk)[1]
        expected = bra(q, k, v, num_heads=heads, n_win=n_win, topk=topk, backend="reference", routing_index=index)
        yield Case(what, args=(q, k, v, index, n_win, heads), expected=expected, atol=1e-9, rtol=1e-7, hint=hint)


@exercise("local_context")
def _local_context():
    hint = "F.conv2d(v.permute(0, 3, 1, 2), weight, bias, padding=K // 2, groups=C), then permute back"
    gen = torch.Generator().manual_seed(0)
    for batch, height, width, channels, kernel, what in [
        (1, 5, 5, 2, 3, "a 5x5 map, 2 channels, 3x3 kernels"),
        (2, 7, 9, 4, 5, "two 7x9 maps (not square), 4 channels, 5x5 kernels as in BiFormer"),
        (1, 4, 4, 3, 1, "1x1 kernels: a per-channel scale and shift"),
    ]:
        v = torch.randn(batch, height, width, channels, generator=gen)
        weight = torch.randn(channels, 1, kernel, kernel, generator=gen)
        bias = torch.randn(channels, generator=gen)
        expected = F.conv2d(v.permute(0, 3, 1, 2), weight, bias, padding=kernel // 2, groups=channels)
        yield Case(what, args=(v, weight, bias), expected=expected.permute(0, 2, 3, 1), atol=1e-5, hint=hint)
