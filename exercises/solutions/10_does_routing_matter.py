"""Solutions for chapter 10, "Does routing matter?"."""

import math

import torch


def mass_on_kept_keys(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the probabilities of the dropped keys and add up each row."""
    return (probs * mask.to(probs.dtype)).sum(-1)


def soft_route(region_logits: torch.Tensor, topk: int) -> torch.Tensor:
    """Softmax over the kept logits, placed back at their columns."""
    top = region_logits.topk(topk, dim=-1)
    return torch.zeros_like(region_logits).scatter(-1, top.indices, top.values.softmax(-1))


def paired_interval(a: list[float], b: list[float], t_quantile: float) -> tuple[float, float, float]:
    """Differences, their mean and sample sd, and mean -/+ t * sd / sqrt(n)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile * sd / math.sqrt(n)
    return mean, mean - half, mean + half
