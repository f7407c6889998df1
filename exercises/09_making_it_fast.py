"""Exercises for chapter 9, "Making it fast".

Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check --chapter 9
"""

import torch


def gathered_kv_bytes(
    batch: int, height: int, width: int, channels: int, n_win: int, topk: int, itemsize: int = 4
) -> int:
    """Bytes of the gathered keys *and* values that the paper's gather materialises, as an int.

    The maps are (batch, height, width, channels); height and width are multiples of n_win. The gather
    builds, for keys and again for values, a tensor of shape (batch, n_win**2, topk, tokens_per_region,
    channels) with tokens_per_region = height * width / n_win**2, each element ``itemsize`` bytes.
    """
    raise NotImplementedError("fill in gathered_kv_bytes")


def matmul_intensity(m: int, n: int, k: int, itemsize: int = 4) -> float:
    """Arithmetic intensity (FLOPs per byte) of one (m x k) @ (k x n) matrix product.

    Count 2 FLOPs per multiply-add, and the fewest bytes the product must move: each operand read once and
    the (m x n) result written once, ``itemsize`` bytes per element. Return a Python float.
    """
    raise NotImplementedError("fill in matmul_intensity")


def scatter_add_rows(grads: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The backward of a row gather: add every gathered row's gradient back to the row it was copied from.

    grads: (R, C) gradients of the gathered rows; rows: (R,) long, the source row of each (rows repeat when a
    region is routed to by several regions, and some rows are never gathered). Returns (n_rows, C), same
    dtype as grads: row j is the sum of grads[i] over every i with rows[i] == j (zero if there is none).
    """
    raise NotImplementedError("fill in scatter_add_rows")
