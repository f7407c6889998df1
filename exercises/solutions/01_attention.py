"""Solutions for chapter 1, "Attention and its quadratic cost"."""

import math

import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention: (..., N, d), (..., M, d), (..., M, dv) -> (..., N, dv)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (..., N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention_memory_limit(budget_bytes: int, heads: int, itemsize: int = 4) -> int:
    """Largest side with heads * side**4 * itemsize <= budget, in whole numbers (no float rounding).

    With 80 GB, 2 heads and 2-byte weights: side**4 <= 2e10, side = 376, so a 1504 x 1504 image: the weights
    of one layer for one image fill the whole GPU, and that is before activations, gradients and a batch.
    """
    side = math.isqrt(math.isqrt(budget_bytes // (heads * itemsize)))  # a first guess, then correct it
    while heads * (side + 1) ** 4 * itemsize <= budget_bytes:
        side += 1
    while side > 0 and heads * side**4 * itemsize > budget_bytes:
        side -= 1
    return side


def attention_entropy(q: torch.Tensor, k: torch.Tensor, scale: float) -> float:
    """Mean of -sum(p log p) over the rows of softmax(q k^T * scale); log_softmax keeps it finite.

    What the experiment shows: with scale = 1 the scores have standard deviation sqrt(d), so for d = 1024 the
    largest score of a row exceeds the others by dozens, the softmax is almost one-hot and the entropy falls
    towards 0 (for d = 4 it stays near log M). A one-hot softmax has a vanishing gradient: changing any score a
    little changes no weight. With scale = d**-0.5 the scores keep unit spread whatever d, and the entropy
    stays about the same for every width. The largest possible entropy is log M (uniform weights: every key
    equally likely).
    """
    log_p = torch.log_softmax(q @ k.transpose(-1, -2) * scale, dim=-1)  # (..., N, M)
    entropy = -(log_p.exp() * log_p).sum(-1)  # (..., N); exp(-inf) * -inf never happens: log_softmax is finite
    return float(entropy.mean())
