"""Checks for chapter 1, "Attention and its quadratic cost": attention from scratch, its memory, its entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bralib.exercises import Case, exercise


def _qkv(shape_q, n_keys, value_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    *batch, _, dim = shape_q
    q = torch.randn(*shape_q, generator=gen)
    k = torch.randn(*batch, n_keys, dim, generator=gen)
    v = torch.randn(*batch, n_keys, value_dim, generator=gen)
    return q, k, v


@exercise("attention")
def _attention():
    hint = "scores = q @ k.transpose(-1, -2) / sqrt(d); masked scores -> -inf; softmax over the keys (last dim); @ v"
    for what, shape_q, n_keys, value_dim, seed in [
        ("one sequence, 6 queries and 6 keys of width 4", (6, 4), 6, 4, 0),
        ("a batch of 2, 5 queries, 7 keys of width 16, values of width 3", (2, 5, 16), 7, 3, 1),
        ("2 images x 3 heads, 9 tokens of width 64 (a wide head: the scale matters)", (2, 3, 9, 64), 9, 8, 2),
    ]:
        q, k, v = _qkv(shape_q, n_keys, value_dim, seed)
        yield Case(what, args=(q, k, v), expected=F.scaled_dot_product_attention(q, k, v), atol=1e-5, hint=hint)
    q, k, v = _qkv((2, 8, 8), 8, 4, 3)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    yield Case("a causal mask (True = may attend): query i sees keys 0..i", args=(q, k, v), kwargs={"mask": causal},
               expected=F.scaled_dot_product_attention(q, k, v, attn_mask=causal), atol=1e-5, hint=hint)  # fmt: skip
    gen = torch.Generator().manual_seed(4)
    sparse = torch.rand(2, 6, 10, generator=gen) < 0.3
    sparse[..., 0] = True  # every query keeps at least one key
    q, k, v = _qkv((2, 6, 5), 10, 5, 5)
    yield Case("a random mask, one per batch element", args=(q, k, v), kwargs={"mask": sparse},
               expected=F.scaled_dot_product_attention(q, k, v, attn_mask=sparse), atol=1e-5, hint=hint)  # fmt: skip


def _largest_side(budget: int, heads: int, itemsize: int) -> int:
    side = 0
    while heads * (side + 1) ** 4 * itemsize <= budget:  # N^2 weights per head, N = side^2 tokens
        side += 1
    return side


@exercise("attention_memory_limit")
def _attention_memory_limit():
    hint = "N = side**2 tokens store N * N weights per head: heads * side**4 * itemsize bytes; keep it <= the budget"
    for budget, heads, itemsize, what in [
        (80 * 10**9, 2, 2, "an 80 GB GPU, 2 heads, 16-bit weights"),
        (8 * 2**30, 2, 4, "8 GiB, 2 heads (BiFormer-T stage 1), float32"),
        (4 * 3136**2, 1, 4, "exactly one 56x56 map's weights, one head"),
        (4 * 3136**2 - 1, 1, 4, "one byte less than that"),
        (15, 1, 4, "less than one weight: side 0"),
    ]:
        yield Case(what, args=(budget, heads), kwargs={"itemsize": itemsize},
                   expected=_largest_side(budget, heads, itemsize), hint=hint)  # fmt: skip


@exercise("attention_entropy")
def _attention_entropy():
    hint = "p = softmax(q @ k^T * scale, dim=-1); entropy = -(p * log p).sum(-1), via log_softmax; mean; float(...)"
    gen = torch.Generator().manual_seed(7)
    for shape_q, n_keys, scale, what in [
        ((64, 4), 64, 1.0, "64 queries and keys of width 4, no scale"),
        ((64, 64), 64, 64**-0.5, "width 64, scale 1/sqrt(d)"),
        ((64, 1024), 64, 1.0, "width 1024 without scale: nearly one-hot rows"),
        ((2, 3, 16, 8), 16, 8**-0.5, "a batch of 2 x 3 heads"),
        ((5, 8), 5, 0.0, "scale 0: uniform weights, entropy log M"),
    ]:
        q = torch.randn(*shape_q, dtype=torch.float64, generator=gen)
        k = torch.randn(*shape_q[:-2], n_keys, shape_q[-1], dtype=torch.float64, generator=gen)
        log_p = torch.log_softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
        expected = float(-(log_p.exp() * log_p).sum(-1).mean())
        yield Case(what, args=(q, k, scale), expected=expected, atol=1e-9, rtol=1e-7, hint=hint)
