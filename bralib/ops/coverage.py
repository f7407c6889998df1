"""How well does a sparse pattern approximate full attention? The share of attention mass it keeps.

For queries and keys of any layer, full attention gives every query a probability distribution over
all N keys. A sparse pattern keeps some keys per query (a boolean (N, N) mask, ``mask[i, j]`` True
when query i keeps key j); the **mass captured** is the probability full attention puts on the kept
keys, between 0 and 1. At an equal budget of keys per query, the pattern whose keys capture more
mass is the better approximation of full attention: the slides' "we expect the sparse pattern to
better approximate the full attention", as a number.

The patterns compared at a budget of ``topk`` regions (``topk * tokens_per_region`` keys per query):

* ``bra``: BRA's routed regions (top-k of the region-level adjacency of region-mean q and k);
* ``local``: the ``topk`` nearest regions (:func:`bralib.ops.local_index`);
* ``random``: ``topk`` random regions per query region;
* ``oracle``: the ``topk`` regions that hold the most full-attention mass of the query region (the
  upper bound of *any* region routing that gives all queries of a region one set of regions);
* ``window``: square windows of ``topk`` regions (when ``topk`` is a square), :func:`masks.window_mask`;
* ``dilated``: tokens whose coordinates agree modulo ``d`` with ``N / d**2`` keys equal to the budget;
* ``axial``: row and column, ``H + W - 1`` keys whatever the budget (reported at its own budget).
"""

from __future__ import annotations

import math

import torch

from bralib.ops import masks
from bralib.ops.regions import region_of_tokens
from bralib.ops.routing import local_index, route_regions
from bralib.ops.validate import check_heads, check_positive_int, check_rank, check_topk

PATTERNS = ("bra", "local", "random", "oracle", "window", "dilated", "axial")


def attention_probs(q: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """Full softmax attention of channels-last q, k (B, H, W, C) split into heads -> (B, heads, N, N), rows sum to 1."""
    check_rank("q", q, 4, "(B, H, W, C)")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, H, W, C), got {tuple(q.shape)} and {tuple(k.shape)}")
    check_heads("C (q.shape[-1])", q.shape[-1], num_heads)
    batch, height, width, channels = q.shape
    head_dim = channels // num_heads
    scale = head_dim**-0.5 if scale is None else scale
    qh = q.reshape(batch, height * width, num_heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
    kh = k.reshape(batch, height * width, num_heads, head_dim).transpose(1, 2)
    return torch.softmax((qh * scale) @ kh.transpose(-1, -2), dim=-1)


def mass_captured(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each query's attention mass on the keys the mask keeps, averaged over heads.

    Args:
        probs: (B, heads, N, N) attention probabilities (rows sum to 1).
        mask: (N, N) or (B, N, N) bool, True where a query keeps a key.

    Returns:
        (B, N) in [0, 1]: 1 for a mask that keeps every key.
    """
    check_rank("probs", probs, 4, "(B, heads, N, N)")
    if mask.dim() == 2:
        mask = mask[None]
    if mask.shape[-2:] != probs.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} must be (N, N) or (B, N, N) for probs {tuple(probs.shape)}")
    return (probs * mask[:, None].to(probs.dtype)).sum(-1).mean(1)


def region_mass(probs: torch.Tensor, height: int, width: int, n_win: int) -> torch.Tensor:
    """(B, heads, N, N) -> (B, S*S, S*S): mean mass a query of region i (any head) puts on key region j."""
    region = region_of_tokens(height, width, n_win, device=probs.device)  # (N,)
    one_hot = torch.nn.functional.one_hot(region, n_win * n_win).to(probs.dtype)  # (N, S^2)
    per_query = probs.mean(1) @ one_hot  # (B, N, S^2): mass of each query on each key region
    summed = one_hot.transpose(0, 1) @ per_query  # (B, S^2, S^2): summed over the queries of region i
    return summed / one_hot.sum(0)[:, None]


def oracle_index(probs: torch.Tensor, height: int, width: int, n_win: int, topk: int) -> torch.Tensor:
    """(B, S*S, topk): for each query region the ``topk`` key regions holding the most full-attention mass.

    Among all choices of ``topk`` regions per query region, this one maximises the mass captured by
    the region's queries together: the upper bound of region routing.
    """
    check_topk(topk, n_win)
    return region_mass(probs, height, width, n_win).topk(topk, dim=-1).indices


def random_index(
    batch: int, n_win: int, topk: int, *, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """(B, S*S, topk): ``topk`` distinct regions drawn uniformly at random for every query region."""
    check_positive_int("batch", batch)
    check_topk(topk, n_win)
    scores = torch.rand(batch, n_win * n_win, n_win * n_win, generator=generator, device=device)
    return scores.argsort(dim=-1)[..., :topk]


def window_side(height: int, width: int, n_win: int, topk: int) -> int | None:
    """Side (tokens) of the square window with ``topk`` regions' worth of keys, or None if there is none."""
    root = math.isqrt(topk)
    if root * root != topk or height != width or height % n_win:
        return None
    return root * height // n_win


def dilation_for(height: int, width: int, n_win: int, topk: int) -> int | None:
    """Dilation d whose pattern keeps ``topk`` regions' worth of keys (N / d**2 = budget), or None."""
    budget = topk * (height // n_win) * (width // n_win)
    d = math.isqrt(height * width // budget) if budget else 0
    if d < 1 or d * d * budget != height * width or height % d or width % d:
        return None
    return d


def pattern_masks(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    topk: int,
    probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Every pattern of :data:`PATTERNS` that exists at this budget, as a (B, N, N) or (N, N) bool mask.

    ``probs`` (from :func:`attention_probs`) is only needed by the oracle; it is computed when not given.
    """
    batch, height, width, _ = q.shape
    if probs is None:
        probs = attention_probs(q, k, num_heads)
    _, bra_index = route_regions(q.detach(), k.detach(), n_win=n_win, topk=topk)
    indices = {
        "bra": bra_index,
        "local": local_index(n_win, topk, device=q.device).expand(batch, -1, -1),
        "random": random_index(batch, n_win, topk, generator=generator, device=q.device),
        "oracle": oracle_index(probs, height, width, n_win, topk),
    }
    out = {name: masks.routed_mask(index, height, width, n_win) for name, index in indices.items()}
    side = window_side(height, width, n_win, topk)
    if side is not None:
        out["window"] = masks.window_mask(height, width, side).to(q.device)
    dilation = dilation_for(height, width, n_win, topk)
    if dilation is not None:
        out["dilated"] = masks.dilated_mask(height, width, dilation).to(q.device)
    out["axial"] = masks.axial_mask(height, width).to(q.device)
    return out


def coverage_table(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    topks: list[int],
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """Mass captured by every pattern at every budget in ``topks`` (the curves of the chapter).

    Returns one row per (pattern, topk): ``{"pattern", "topk", "keys", "mass"}`` where ``keys`` is
    the mean number of keys per query the pattern keeps and ``mass`` the mean share of full-attention
    mass on them (over queries, heads and the batch). Axial appears once, at its own budget.
    """
    probs = attention_probs(q, k, num_heads)
    generator = torch.Generator(device=q.device).manual_seed(seed)
    rows, axial_done = [], False
    for topk in topks:
        found = pattern_masks(q, k, num_heads=num_heads, n_win=n_win, topk=topk, probs=probs, generator=generator)
        for name, mask in found.items():
            if name == "axial":
                if axial_done:
                    continue
                axial_done = True
            keys = mask.sum(-1).float().mean().item()
            mass = mass_captured(probs, mask).mean().item()
            rows.append({"pattern": name, "topk": topk, "keys": round(keys, 2), "mass": round(mass, 4)})
    return rows
