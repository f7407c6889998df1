"""Exercises for chapter 1, "Attention and its quadratic cost".

Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check --chapter 1
"""

import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, softmax(q k^T / sqrt(d)) v, written with plain tensor operations.

    q: (..., N, d) queries; k: (..., M, d) keys; v: (..., M, dv) values; mask: None, or a bool tensor
    broadcastable to (..., N, M) where True means "query i may attend to key j". Every query keeps at least
    one key. Returns (..., N, dv). (Do not call torch.nn.functional.scaled_dot_product_attention: the check
    compares your function with it.)
    """
    raise NotImplementedError("fill in attention")


def attention_flops(n_queries: int, n_keys: int, dim: int) -> int:
    """FLOPs of softmax(Q K^T) V for one head, as an int.

    Q is (n_queries, dim), K and V are (n_keys, dim). Count the two matrix products only (not the softmax),
    and count one multiply-add as 2 FLOPs (the convention of torch.utils.flop_counter).
    """
    raise NotImplementedError("fill in attention_flops")


def loglog_slope(sizes: list[float], values: list[float]) -> float:
    """The slope p of the least-squares straight line through the points (log size, log value).

    For values that follow a power law a * size**p this is the exponent p. Use all the points (a line
    through the first and last point only is not the least-squares fit). Return a Python float.
    """
    raise NotImplementedError("fill in loglog_slope")
