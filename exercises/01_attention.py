"""Exercises for chapter 1, "Attention and its quadratic cost".

Tags: difficulty, and kind: *transcription* (write again what the chapter showed), *design* (work out
something it did not show) or *experiment* (build a measurement, then use it to answer a question).
Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check --chapter 1
"""

import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[easy, transcription] Scaled dot-product attention, softmax(q k^T / sqrt(d)) v, with plain tensor operations.

    q: (..., N, d) queries; k: (..., M, d) keys; v: (..., M, dv) values; mask: None, or a bool tensor
    broadcastable to (..., N, M) where True means "query i may attend to key j". Every query keeps at least
    one key. Returns (..., N, dv). (Do not call torch.nn.functional.scaled_dot_product_attention: the check
    compares your function with it.)
    """
    raise NotImplementedError("fill in attention")


def attention_memory_limit(budget_bytes: int, heads: int, itemsize: int = 4) -> int:
    """[easy, design] The largest square map whose naive attention weights fit in a memory budget.

    A map of side x side tokens has N = side**2 tokens; one full-attention layer done naively stores an
    N x N matrix of weights per head, ``itemsize`` bytes each. Return the largest side (an int) for which the
    ``heads`` heads' weights of one image take at most ``budget_bytes``. Then: with an 80 GB GPU, 2 heads and
    16-bit weights, what is the largest input image (4x4-pixel patches) one layer could take?
    """
    raise NotImplementedError("fill in attention_memory_limit")


def attention_entropy(q: torch.Tensor, k: torch.Tensor, scale: float) -> float:
    """[medium, experiment] The mean entropy, in nats, of the attention rows softmax(q k^T * scale).

    q: (..., N, d), k: (..., M, d). Every query's softmax over the M keys is a probability distribution p;
    its entropy is -sum(p * log p) (take 0 * log 0 = 0). Return the mean over all queries as a Python float.

    Then experiment: for d = 4, 64, 1024, draw q and k of shape (256, d) from a standard normal and compare
    scale = 1 with scale = d**-0.5. What happens to the entropy without the scale as d grows, and why does
    that make the softmax hard to train? What is the largest possible entropy with M keys?
    """
    raise NotImplementedError("fill in attention_entropy")
