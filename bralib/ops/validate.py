"""Argument checks shared by the BRA functions: each error says what was wrong and what is allowed."""

from __future__ import annotations

import torch


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_rank(name: str, tensor: torch.Tensor, rank: int, layout: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions {layout}, got shape {tuple(tensor.shape)}")


def check_divisible(name: str, size: int, n_win: int) -> None:
    if size % n_win != 0:
        raise ValueError(
            f"{name}={size} is not divisible by n_win={n_win}: allowed sizes are multiples of {n_win} "
            f"(BiLevelRoutingAttention(auto_pad=True) pads any size)"
        )


def check_topk(topk: object, n_win: int) -> None:
    n_regions = n_win * n_win
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= n_regions:
        raise ValueError(f"topk must be an integer in [1, n_win**2] = [1, {n_regions}] for n_win={n_win}, got {topk!r}")


def check_heads(name: str, channels: int, num_heads: int) -> None:
    check_positive_int("num_heads", num_heads)
    if channels % num_heads != 0:
        raise ValueError(f"{name}={channels} is not divisible by num_heads={num_heads}: num_heads must divide {name}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv), on one device and dtype."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_rank(name, t, 4, "(B, H, W, C)")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, H, W, Cqk), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must share (B, H, W) with q: q is {tuple(q.shape)}, v is {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
