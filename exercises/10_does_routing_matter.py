"""Exercises for chapter 10, "Does routing matter?".

Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check mass_on_kept_keys
    bralib exercise check soft_route
    bralib exercise check paired_interval
"""

import torch


def mass_on_kept_keys(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The share of each query's attention mass that falls on the keys a pattern keeps.

    Args:
        probs: (N, N) full-attention probabilities, row i is query i's distribution over the N keys.
        mask: (N, N) bool, True where query i keeps key j.

    Returns:
        (N,) float, one share in [0, 1] per query.
    """
    raise NotImplementedError("fill in mass_on_kept_keys")


def soft_route(region_logits: torch.Tensor, topk: int) -> torch.Tensor:
    """Soft routing weights: a differentiable version of BRA's top-k choice.

    Args:
        region_logits: (R, R) region-to-region scores (row: query region, column: key region).
        topk: regions kept per row.

    Returns:
        (R, R) weights: in each row, the softmax of that row's ``topk`` largest logits at their places,
        and 0 everywhere else. Multiplying each gathered region's attention output by its weight lets the
        loss send a gradient into the logits, which the hard top-k index never does.
    """
    raise NotImplementedError("fill in soft_route")


def paired_interval(a: list[float], b: list[float], t_quantile: float) -> tuple[float, float, float]:
    """Mean of the paired differences a[i] - b[i] and its two-sided confidence interval.

    Args:
        a, b: one accuracy per seed for two arms, seed i in place i of both lists (at least 2 seeds).
        t_quantile: the Student-t quantile for n - 1 degrees of freedom (4.303 for 95 % with 3 seeds).

    Returns:
        (mean, low, high), where low/high = mean -/+ t_quantile * sd / sqrt(n), with the sample standard
        deviation sd (divisor n - 1) of the differences.
    """
    raise NotImplementedError("fill in paired_interval")
