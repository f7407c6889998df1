"""Bi-Level Routing Attention: the functional form :func:`bra` and the module :class:`BiLevelRoutingAttention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bralib.errors import UsageError
from bralib.ops.amp import autocast_off
from bralib.ops.backends import choose_backend, get_backend
from bralib.ops.nonfinite import apply_rule
from bralib.ops.routing import local_index, region_means, route_regions, routing_dtype, top_regions
from bralib.ops.validate import (
    check_divisible,
    check_heads,
    check_map,
    check_positive_int,
    check_positive_number,
    check_qkv,
    check_routing_index,
    check_topk,
)

ROUTINGS = ("content", "local")


def bra(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    topk: int,
    scale: float | None = None,
    routing_scale: float | None = None,
    backend: str = "auto",
    routing: str = "content",
    routing_index: torch.Tensor | None = None,
    return_routing: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Bi-level routing attention on channels-last maps.

    Args:
        q, k: (B, H, W, Cqk) queries and keys; v: (B, H, W, Cv) values, floating point. H and W must be
            multiples of ``n_win``; B may be 0 (an empty output).
        num_heads: heads for token attention (must divide Cqk and Cv). One routing graph, computed
            from all channels, is shared by every head.
        n_win: regions per side S.
        topk: regions each region attends to, 1 <= topk <= S*S.
        scale: token-attention scale, a positive number; default ``(Cqk / num_heads) ** -0.5`` (the paper).
        routing_scale: region-logit scale, a positive number; default ``Cqk ** -0.5`` (the released code).
        backend: ``"auto"`` or a name in ``bralib.ops.backends.BACKENDS``.
        routing: ``"content"`` (BRA: top-k of the region adjacency) or ``"local"`` (each region's
            ``topk`` nearest regions: a content-blind baseline of identical cost).
        routing_index: a precomputed (B, S*S, topk) int64 index on q's device, each row ``topk`` distinct
            region numbers in [0, S*S); when given, ``routing`` is not used. Its values are checked (on a GPU
            that costs one synchronisation).
        return_routing: also return the routing index.

    Returns:
        (B, H, W, Cv), and the routing index (B, S*S, topk) when ``return_routing``.

    No gradient flows through the routing: top-k indices are discrete, so the logits' gradient
    would be zero anyway; routing on detached q and k just saves the autograd bookkeeping.

    NaN and infinities follow one rule on every backend (:mod:`bralib.ops.nonfinite`): a token contributes
    nothing to the queries that do not route to it, and an output is NaN exactly where a non-finite number
    reaches it (its query, or a routed key or value).
    """
    check_qkv(q, k, v)
    check_positive_int("n_win", n_win)
    check_heads("Cqk (q.shape[-1])", q.shape[-1], num_heads)
    check_heads("Cv (v.shape[-1])", v.shape[-1], num_heads)
    check_divisible("H", q.shape[1], n_win)
    check_divisible("W", q.shape[2], n_win)
    check_topk(topk, n_win)
    for name, value in (("scale", scale), ("routing_scale", routing_scale)):
        if value is not None:
            check_positive_number(name, value)
    if routing not in ROUTINGS:
        raise UsageError(f"routing must be one of {ROUTINGS}, got {routing!r}")
    if backend != "auto":
        get_backend(backend)
    if routing_index is not None:
        check_routing_index(routing_index, q, n_win, topk)
    return routed_attention(
        q, k, v, num_heads=num_heads, n_win=n_win, topk=topk, scale=scale, routing_scale=routing_scale,
        backend=backend, routing=routing, routing_index=routing_index, return_routing=return_routing,
    )  # fmt: skip


def routed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    topk: int,
    scale: float | None,
    routing_scale: float | None,
    backend: str,
    routing: str,
    routing_index: torch.Tensor | None,
    return_routing: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`bra` without its argument checks, for callers that built (and so trust) their arguments.

    :class:`BiLevelRoutingAttention` calls it with the routing index it computed itself: checking that
    index's values would cost a device synchronisation (and a graph break under ``torch.compile``) per layer.
    """
    if backend == "auto":
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        backend = choose_backend(q, v, n_win=n_win, topk=topk, needs_grad=needs_grad)
    chosen = get_backend(backend)
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else scale
    if routing_index is not None:
        index = routing_index
    elif routing == "local":
        index = local_index(n_win, topk, device=q.device).expand(q.shape[0], -1, -1)  # (B, S^2, topk)
    else:
        _, index = route_regions(q.detach(), k.detach(), n_win=n_win, topk=topk, scale=routing_scale)
    if q.shape[0] == 0:  # an empty batch: nothing to attend, but autograd still sees q, k and v
        out = v + (q.sum() + k.sum()).to(v.dtype) * 0  # (0, H, W, Cv)
    else:
        out = chosen.fn(q, k, v, index, num_heads=num_heads, n_win=n_win, scale=scale)
        out = apply_rule(out, q, k, v, index, num_heads=num_heads, n_win=n_win)  # NaN where NaN or inf reaches
    return (out, index) if return_routing else out


SCALE_MODES = ("paper", "official")
ROUTE_FROM = ("x", "qk")


class BiLevelRoutingAttention(nn.Module):
    """BRA as a layer on (B, H, W, C) maps: qkv projection, routing, token attention, LCE, output projection.

    Args:
        dim: channels C of input and output.
        num_heads: attention heads (must divide ``dim`` and ``qk_dim``).
        n_win: regions per side S.
        topk: routed regions per region, 1 <= topk <= S*S.
        qk_dim: channels of queries and keys; default ``dim``.
        side_dwconv: kernel size of the local context enhancement (depthwise conv on V); 0 disables it.
        auto_pad: zero-pad H and W up to multiples of ``n_win`` before the projections and crop after,
            exactly as the released code does for dense prediction. Padded positions then carry the
            projection biases and take part in routing and attention as keys; the rule is "same
            output as running on the explicitly zero-padded input and cropping".
        scale_mode: ``"paper"`` scales token attention by head_dim ** -0.5; ``"official"`` by
            qk_dim ** -0.5 as the released code does (needed for its weights).
        backend: BRA backend name, see :func:`bra`.
        routing: ``"content"`` (BRA) or ``"local"`` (nearest regions, same cost), see :func:`bra`.
        route_from: where content routing gets its region-level queries and keys. ``"x"``: project the
            region means of x in float32 (see :meth:`route`; AMP routes like float32, at the price of an
            extra (S*S, dim) x (dim, 2*qk_dim) projection). ``"qk"``: the region means of the q and k
            this layer computes anyway, as the released code does (no extra projection; under autocast
            they carry the reduced precision of q and k).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_win: int = 7,
        topk: int = 4,
        qk_dim: int | None = None,
        side_dwconv: int = 5,
        auto_pad: bool = False,
        scale_mode: str = "paper",
        backend: str = "auto",
        routing: str = "content",
        route_from: str = "x",
    ) -> None:
        super().__init__()
        qk_dim = dim if qk_dim is None else qk_dim
        check_positive_int("dim", dim)
        check_positive_int("qk_dim", qk_dim)
        check_heads("dim", dim, num_heads)
        check_heads("qk_dim", qk_dim, num_heads)
        check_positive_int("n_win", n_win)
        check_topk(topk, n_win)
        if (
            isinstance(side_dwconv, bool)
            or not isinstance(side_dwconv, int)
            or side_dwconv < 0
            or (side_dwconv > 0 and side_dwconv % 2 == 0)
        ):
            raise UsageError(f"side_dwconv must be 0 (no LCE) or an odd kernel size, got {side_dwconv}")
        if scale_mode not in SCALE_MODES:
            raise UsageError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        if backend != "auto":
            get_backend(backend)
        if routing not in ROUTINGS:
            raise UsageError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if route_from not in ROUTE_FROM:
            raise UsageError(f"route_from must be one of {ROUTE_FROM}, got {route_from!r}")
        self.routing, self.route_from = routing, route_from
        self.dim, self.qk_dim, self.num_heads = dim, qk_dim, num_heads
        self.n_win, self.topk, self.auto_pad, self.scale_mode, self.backend = n_win, topk, auto_pad, scale_mode, backend
        self.scale = (qk_dim if scale_mode == "official" else qk_dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)  # rows: q | k | v
        self.lce = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv > 0 else None
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, qk_dim={self.qk_dim}, num_heads={self.num_heads}, n_win={self.n_win}, "
            f"topk={self.topk}, scale_mode={self.scale_mode!r}, auto_pad={self.auto_pad}, backend={self.backend!r}, "
            f"routing={self.routing!r}, route_from={self.route_from!r}"
        )

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> routing index (B, S*S, topk).

        The projection is linear, so the mean of a region's queries is the projection of the
        region's mean token: ``mean(W x + b) = W mean(x) + b``. Routing from the region means of
        ``x`` costs S*S projections instead of H*W, and running it in float32 (outside autocast)
        means AMP never changes which regions are routed: the fp32 and the AMP model route alike.
        """
        work = routing_dtype(x)
        with autocast_off(x.device):
            x_region = region_means(x.to(work), self.n_win)  # (B, S^2, dim)
            weight = self.qkv.weight[: 2 * self.qk_dim].to(work)
            bias = self.qkv.bias[: 2 * self.qk_dim].to(work)
            q_region, k_region = F.linear(x_region, weight, bias).split(self.qk_dim, dim=-1)  # (B, S^2, qk_dim)
        return top_regions(q_region, k_region, topk=self.topk, scale=self.qk_dim**-0.5)[1]

    def forward(
        self, x: torch.Tensor, return_routing: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, H, W, dim) -> (B, H, W, dim) (and the routing index (B, S*S, topk) if asked)."""
        check_map("x", x)
        if x.shape[-1] != self.dim:
            raise UsageError(f"x has {x.shape[-1]} channels (last dim), but this layer was built for dim={self.dim}")
        height, width = x.shape[1:3]
        pad_h, pad_w = (-height) % self.n_win, (-width) % self.n_win
        if (pad_h or pad_w) and not self.auto_pad:
            check_divisible("H", height, self.n_win)
            check_divisible("W", width, self.n_win)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # zero tokens at the bottom and right
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        # route_from="qk" leaves routing to bra(): region means of q and k, scaled by qk_dim ** -0.5.
        index = self.route(x) if self.routing == "content" and self.route_from == "x" else None
        out, index = routed_attention(
            q, k, v, num_heads=self.num_heads, n_win=self.n_win, topk=self.topk, scale=self.scale,
            routing_scale=None, backend=self.backend, routing=self.routing, routing_index=index, return_routing=True,
        )  # fmt: skip
        if self.lce is not None:
            out = out + self.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.proj(out)[:, :height, :width]
        return (out, index) if return_routing else out
