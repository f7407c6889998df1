"""Checks for chapter 10, "Does routing matter?": mass on kept keys, soft routing, the paired interval."""

from __future__ import annotations

import math

import torch

from bralib.exercises import Case, exercise


@exercise("mass_on_kept_keys")
def _mass_on_kept_keys():
    hint = "multiply probs by the mask (as floats) and sum each row"
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.4, 0.3, 0.2, 0.1]])
    diagonal = torch.eye(4, dtype=torch.bool)
    yield Case("each query keeps only itself", args=(probs, diagonal), expected=torch.tensor([0.1, 0.25, 0.0, 0.1]),
               hint=hint)  # fmt: skip
    yield Case("every key kept: all the mass", args=(probs, torch.ones(4, 4, dtype=torch.bool)),
               expected=torch.ones(4), hint=hint)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    random_probs = torch.rand(6, 6, generator=generator).softmax(-1)
    mask = torch.rand(6, 6, generator=generator) > 0.5
    yield Case("random probabilities, random mask", args=(random_probs, mask),
               expected=torch.where(mask, random_probs, 0.0).sum(-1), hint=hint)  # fmt: skip


def _soft_route_reference(logits: torch.Tensor, topk: int) -> torch.Tensor:
    out = torch.zeros_like(logits)
    for row in range(logits.shape[0]):
        values, columns = torch.sort(logits[row], descending=True)
        out[row, columns[:topk]] = torch.softmax(values[:topk], dim=0)
    return out


@exercise("soft_route")
def _soft_route():
    hint = "torch.topk gives the kept values and their columns; softmax the values; scatter them into zeros"
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 3.0, 1.0], [1.0, 2.0, 3.0, 4.0], [5.0, -5.0, 0.0, 0.5]])
    for topk in (1, 2, 4):
        yield Case(f"4 regions, top-{topk}", args=(logits, topk), expected=_soft_route_reference(logits, topk),
                   hint=hint)  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    big = torch.randn(16, 16, generator=generator)
    yield Case("16 regions, top-4", args=(big, 4), expected=_soft_route_reference(big, 4), hint=hint)


def _paired_reference(a: list[float], b: list[float], t: float) -> tuple[float, float, float]:
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return mean, mean - t * sd / math.sqrt(len(diffs)), mean + t * sd / math.sqrt(len(diffs))


@exercise("paired_interval")
def _paired_interval():
    hint = "pair by position: d_i = a_i - b_i; sample sd with n - 1; half-width t * sd / sqrt(n)"
    cases = [
        ([100.0, 99.5, 100.0], [52.0, 50.5, 49.0], 4.303, "three seeds, a large gap"),
        ([70.0, 60.0], [65.0, 62.0], 12.706, "two seeds: a wide interval"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], 3.182, "identical arms: (0, 0, 0)"),
        ([80.0, 75.0, 90.0, 85.0, 70.0], [60.0, 70.0, 60.0, 80.0, 65.0], 2.776, "five seeds"),
    ]
    for a, b, t, what in cases:
        yield Case(what, args=(a, b, t), expected=_paired_reference(a, b, t), hint=hint)
