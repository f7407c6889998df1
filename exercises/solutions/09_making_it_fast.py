"""Solutions for chapter 9, "Making it fast"."""

import torch


def gathered_kv_bytes(
    batch: int, height: int, width: int, channels: int, n_win: int, topk: int, itemsize: int = 4
) -> int:
    """Two tensors (keys, values) of batch * S^2 * topk * (HW / S^2) * C elements: the S^2 cancels."""
    tokens_per_region = height * width // (n_win * n_win)
    return 2 * batch * n_win * n_win * topk * tokens_per_region * channels * itemsize


def matmul_intensity(m: int, n: int, k: int, itemsize: int = 4) -> float:
    """2mnk FLOPs over (mk + kn + mn) elements moved."""
    return 2 * m * n * k / ((m * k + k * n + m * n) * itemsize)


def scatter_add_rows(grads: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """index_add_ sums the rows that share a destination (a plain out[rows] += grads would keep only one)."""
    out = torch.zeros(n_rows, grads.shape[1], dtype=grads.dtype, device=grads.device)
    return out.index_add_(0, rows, grads)
