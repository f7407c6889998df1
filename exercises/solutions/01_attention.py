"""Solutions for chapter 1, "Attention and its quadratic cost"."""

import math

import numpy as np
import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention: (..., N, d), (..., M, d), (..., M, dv) -> (..., N, dv)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (..., N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention_flops(n_queries: int, n_keys: int, dim: int) -> int:
    """Q K^T and weights @ V: n_queries * n_keys * dim multiply-adds each, 2 FLOPs per multiply-add."""
    return 2 * 2 * n_queries * n_keys * dim


def loglog_slope(sizes: list[float], values: list[float]) -> float:
    """Least-squares slope of log(values) against log(sizes)."""
    slope, _intercept = np.polyfit(np.log(sizes), np.log(values), 1)
    return float(slope)
