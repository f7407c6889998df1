"""Checks for chapter 1, "Attention and its quadratic cost": attention from scratch, its FLOPs, log-log slopes."""

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


@exercise("attention_flops")
def _attention_flops():
    hint = "Q K^T is n_queries * n_keys dot products of length dim; weights @ V is as many again; x2 per multiply-add"
    for n_queries, n_keys, dim, what in [
        (196, 196, 32, "full attention over a 14x14 map, one head of width 32"),
        (3136, 3136, 32, "full attention over BiFormer's 56x56 stage-1 map"),
        (3136, 64, 32, "BRA at stage 1: each query sees k=1 region of 64 tokens"),
        (10, 7, 3, "a small uneven case"),
    ]:
        yield Case(what, args=(n_queries, n_keys, dim), expected=4 * n_queries * n_keys * dim, hint=hint)


@exercise("loglog_slope")
def _loglog_slope():
    hint = "fit log(value) = log(a) + p * log(size) to all points, e.g. with numpy.polyfit(..., 1)"
    sizes = [196, 784, 3136, 12544]
    yield Case("an exact square law", args=(sizes, [3.0 * n**2 for n in sizes]), expected=2.0, hint=hint)
    yield Case("an exact 4/3 power law", args=([10, 100, 1000], [n ** (4 / 3) for n in (10, 100, 1000)]),
               expected=4 / 3, hint=hint)  # fmt: skip
    # Timings with overhead at the small end: least squares and a first-to-last line disagree here.
    from bralib.complexity.scaling import loglog_slope

    times = [0.0005, 0.02, 0.34, 5.1]
    slope = loglog_slope(sizes, times)
    yield Case("measured-looking times, flattened by overhead at the small end", args=(sizes, times),
               expected=slope, rtol=1e-6, hint=hint)  # fmt: skip
