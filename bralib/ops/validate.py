"""Argument checks shared by the BRA functions: each error says what was wrong and what is allowed.

Value errors are :class:`bralib.errors.UsageError` (a ``ValueError``), so the command line prints them as one
line; a wrong type is a ``TypeError``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch._subclasses.fake_tensor import is_fake

from bralib.errors import UsageError


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def check_positive_number(name: str, value: object) -> None:
    """A finite real number > 0 (a scale: zero would flatten the softmax, a negative one would invert it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive finite number (or None for the default), got {value!r}")


def check_rank(name: str, tensor: torch.Tensor, rank: int, layout: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != rank:
        raise UsageError(f"{name} must have {rank} dimensions {layout}, got shape {tuple(tensor.shape)}")


def check_divisible(name: str, size: int, n_win: int) -> None:
    if size % n_win != 0:
        raise UsageError(
            f"{name}={size} is not divisible by n_win={n_win}: allowed sizes are multiples of {n_win} "
            f"(BiLevelRoutingAttention(auto_pad=True) pads any size)"
        )


def check_topk(topk: object, n_win: int) -> None:
    n_regions = n_win * n_win
    if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or not 1 <= topk <= n_regions:
        raise UsageError(f"topk must be an integer in [1, n_win**2] = [1, {n_regions}] for n_win={n_win}, got {topk!r}")


def check_heads(name: str, channels: int, num_heads: int) -> None:
    check_positive_int("num_heads", num_heads)
    if channels < 1:
        raise UsageError(f"{name}={channels}: there must be at least one channel per head (num_heads={num_heads})")
    if channels % num_heads != 0:
        raise UsageError(f"{name}={channels} is not divisible by num_heads={num_heads}: num_heads must divide {name}")


def check_map(name: str, x: torch.Tensor) -> None:
    """x: a (B, H, W, C) floating-point map with at least one token (B = 0 is allowed: an empty batch)."""
    check_rank(name, x, 4, "(B, H, W, C)")
    if not x.dtype.is_floating_point:
        raise UsageError(f"{name} must be a floating-point tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    height, width = x.shape[1:3]
    if height < 1 or width < 1:
        raise UsageError(f"{name} has an empty map (H={height}, W={width}): H and W must be at least 1")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv), floating point, on one device and dtype, with a non-empty map.

    B = 0 is allowed (an empty batch gives an empty output); H = 0 or W = 0 is not: a map needs at least one
    token per region for attention to be defined.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_rank(name, t, 4, "(B, H, W, C)")
    if q.shape != k.shape:
        raise UsageError(f"q and k must have the same shape (B, H, W, Cqk), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise UsageError(f"v must share (B, H, W) with q: q is {tuple(q.shape)}, v is {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise UsageError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.dtype.is_floating_point:
        raise UsageError(f"q, k, v must be floating-point tensors (float16, bfloat16, float32, float64), got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise UsageError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    height, width = q.shape[1:3]
    if height < 1 or width < 1:
        raise UsageError(f"q, k, v have an empty map (H={height}, W={width}): H and W must be at least 1")


def check_routing_index(index: object, q: torch.Tensor, n_win: int, topk: int) -> None:
    """A caller's routing index: a (B, S*S, topk) int64 tensor on q's device, each row ``topk`` distinct regions.

    Checking the values reads them (a device synchronisation on a GPU), so :func:`bralib.ops.bra` checks only
    indices it is given, never the ones it computes.
    """
    expected = (q.shape[0], n_win * n_win, topk)
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"routing_index must be a torch.Tensor of shape (B, n_win**2, topk) = {expected}, "
                        f"got {type(index).__name__}")  # fmt: skip
    if index.dtype != torch.long:
        raise UsageError(
            f"routing_index must be a long (int64) tensor of shape (B, n_win**2, topk) = {expected}, "
            f"got {index.dtype}; convert it with routing_index.long()"
        )
    if tuple(index.shape) != expected:
        raise UsageError(
            f"routing_index must be a long tensor of shape (B, n_win**2, topk) = {expected}, "
            f"got {index.dtype} {tuple(index.shape)}"
        )
    if index.device != q.device:
        raise UsageError(
            f"routing_index is on {index.device} but q is on {q.device}: they must be on one device "
            "(routing_index.to(q.device))"
        )
    if index.numel() == 0 or index.device.type == "meta" or is_fake(index):  # no values to read
        return
    n_regions = n_win * n_win
    ordered = index.sort(dim=-1).values  # (B, S^2, topk): a repeat sits next to its twin
    repeated = (ordered[..., 1:] == ordered[..., :-1]).any()
    if not bool((index.min() < 0) | (index.max() >= n_regions) | repeated):  # one synchronisation
        return
    outside = (index < 0) | (index >= n_regions)
    if outside.any():
        where = tuple(int(i) for i in outside.nonzero()[0])
        raise UsageError(
            f"routing_index holds region numbers in [0, n_win**2) = [0, {n_regions}) (n_win={n_win}); "
            f"got {int(index[where])} at {list(where)} (negative numbers do not count from the end)"
        )
    b, r = (int(i) for i in (ordered[..., 1:] == ordered[..., :-1]).any(-1).nonzero()[0])
    raise UsageError(
        f"routing_index rows must list {topk} distinct regions; row [{b}, {r}] is {index[b, r].tolist()} "
        "(a region attends to each routed region once)"
    )
