"""An isotropic ablation family: one resolution, L blocks, and only the attention pattern changes.

    image (B, 3, P, P)
      -> patch embedding: conv p x p, stride p (no overlap)  + learned position embedding    (B, H, W, C)
      -> L blocks:  x = x + attn(norm(x));  x = x + mlp(norm(x))                            (B, H, W, C)
      -> head: LayerNorm, mean over tokens, Linear                                          (B, classes)

The arms (``attention=``) differ only in which keys each query may attend to; every arm has the same
modules and so the same parameters:

* ``full``: every token (the ceiling);
* ``bra``: BRA's routing, the ``topk`` regions whose region-mean keys best match the region-mean query;
* ``local``: the ``topk`` nearest regions (``bralib.ops.local_index``; ties go to the lower region
  number, so with topk = 4 an inner region sees itself, the regions above, left and right of it);
* ``random``: ``topk`` random regions per region, drawn anew at every forward pass;
* ``oracle``: the ``topk`` regions holding the most full-attention mass (computed from full attention:
  an upper bound of region routing, not an efficient method);
* ``window`` (every block) and ``swin`` (windows, then windows shifted by half a window, alternating):
  square windows holding ``topk`` regions' worth of tokens;
* ``axial``: same row or column;  ``dilated``: coordinates equal modulo ``d``, ``N / d**2`` keys.

Every sparse arm keeps the same number of keys per query (axial: H + W - 1, the nearest a row-and-column
pattern gets), so their multiply-adds agree within 1 % (:func:`isotropic_macs`). Unlike BiFormer, the
blocks have **no convolutions** (no conv position encoding, no local context enhancement): they would
give every arm a receptive field growing with depth and blur exactly the question asked here; the
position embedding is learned instead. Attention is computed densely under a boolean mask
(``bralib.ops.masks.masked_attention``), the obviously-right form; the costs are those of the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from bralib.models.layers import DropPath, Mlp, init_weights
from bralib.ops import masks
from bralib.ops.coverage import attention_probs, dilation_for, oracle_index, random_index, window_side
from bralib.ops.routing import local_index, route_regions
from bralib.ops.validate import check_heads, check_rank, check_topk

ATTENTIONS = ("full", "bra", "local", "random", "oracle", "window", "swin", "axial", "dilated")
REGION_ARMS = ("bra", "local", "random", "oracle")


@dataclass(frozen=True)
class IsotropicConfig:
    """One arm of the ablation: image side ``image_size``, ``patch`` pixels per token, ``depth`` blocks."""

    attention: str = "bra"
    image_size: int = 32
    patch: int = 4
    dim: int = 64
    depth: int = 1
    heads: int = 4
    mlp_ratio: float = 3.0
    n_win: int = 4
    topk: int = 4
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.image_size % self.patch:
            raise ValueError(f"image_size={self.image_size} must be a multiple of patch={self.patch}")
        side = self.grid
        if side % self.n_win:
            raise ValueError(f"the {side}x{side} token grid must split into n_win={self.n_win} regions per side")
        check_topk(self.topk, self.n_win)
        check_heads("dim", self.dim, self.heads)
        if self.attention in ("window", "swin") and window_side(side, side, self.n_win, self.topk) is None:
            raise ValueError(f"attention={self.attention!r} needs topk to be a square number, got {self.topk}")
        if self.attention == "dilated" and dilation_for(side, side, self.n_win, self.topk) is None:
            raise ValueError(f"no dilation keeps topk={self.topk} regions' worth of keys on a {side}x{side} grid")

    @property
    def grid(self) -> int:
        """Tokens per side, H = W."""
        return self.image_size // self.patch


CONFIG_KEYS = tuple(f.name for f in fields(IsotropicConfig) if f.name != "note")


def _arm(attention: str) -> IsotropicConfig:
    return IsotropicConfig(attention=attention, note=f"isotropic ablation arm '{attention}': 8x8 tokens, 1 block")


# 32x32 images (8x8 tokens of 4x4 pixels), one block of width 64 with 4 heads, 4x4 regions of 2x2 tokens, 4
# routed: every sparse arm keeps 16 keys per query (a quarter of the tokens). One block, because the local arms'
# reach grows by a region per block: on an 8x8 grid two blocks of local routing already span the map (chapter 10).
ISOTROPIC_CONFIGS: dict[str, IsotropicConfig] = {f"isotropic_{a}": _arm(a) for a in ATTENTIONS}


class PatternAttention(nn.Module):
    """Multi-head self-attention over an (H, W) token grid restricted to one pattern (see the module docstring).

    The same parameters for every pattern: ``qkv`` (C -> 3C) and ``proj`` (C -> C). Routing arms route
    from the region means of q and k (as the released BiFormer code does), without gradient: top-k
    passes none, so q and k learn to route only through the token attention they feed.
    """

    def __init__(self, dim: int, num_heads: int, grid: int, attention: str, n_win: int, topk: int, shifted: bool):
        super().__init__()
        self.dim, self.num_heads, self.grid, self.attention = dim, num_heads, grid, attention
        self.n_win, self.topk, self.shifted = n_win, topk, shifted
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("static_mask", self._static_mask(), persistent=False)
        self.last_index: torch.Tensor | None = None  # the routing of the last forward pass, for inspection

    def _static_mask(self) -> torch.Tensor | None:
        """The (N, N) mask of a content-blind pattern, or None (full attention and the routed arms)."""
        side, n_win, topk = self.grid, self.n_win, self.topk
        if self.attention in ("window", "swin"):
            window = window_side(side, side, n_win, topk)
            return masks.window_mask(side, side, window, shift=window // 2 if self.shifted else 0)
        if self.attention == "axial":
            return masks.axial_mask(side, side)
        if self.attention == "dilated":
            return masks.dilated_mask(side, side, dilation_for(side, side, n_win, topk))
        if self.attention == "local":
            return masks.routed_mask(local_index(n_win, topk)[None], side, side, n_win)[0]
        return None

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention!r}, grid={self.grid}, n_win={self.n_win}, topk={self.topk}, "
            f"shifted={self.shifted}"
        )

    def routing_index(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
        """(B, S*S, topk) regions each region attends to, for the arms that choose them per input."""
        batch, side = q.shape[0], self.grid
        if self.attention == "bra":
            return route_regions(q.detach(), k.detach(), n_win=self.n_win, topk=self.topk)[1]
        if self.attention == "oracle":
            with torch.no_grad():
                probs = attention_probs(q, k, self.num_heads, self.scale)
            return oracle_index(probs, side, side, self.n_win, self.topk)
        if self.attention == "random":
            return random_index(batch, self.n_win, self.topk, device=q.device)
        if self.attention == "local":
            return local_index(self.n_win, self.topk, device=q.device).expand(batch, -1, -1)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        check_rank("x", x, 4, "(B, H, W, C)")
        batch, height, width, channels = x.shape
        if (height, width) != (self.grid, self.grid) or channels != self.dim:
            raise ValueError(f"x must be (B, {self.grid}, {self.grid}, {self.dim}), got {tuple(x.shape)}")
        q, k, v = self.qkv(x).split(self.dim, dim=-1)  # each (B, H, W, C)
        index = self.routing_index(q, k)
        self.last_index = None if index is None else index.detach()
        if self.attention in ("bra", "oracle", "random"):
            mask = masks.routed_mask(index, height, width, self.n_win)[:, None]  # (B, 1, N, N)
        else:
            mask = self.static_mask  # (N, N) or None
        heads, head_dim = self.num_heads, channels // self.num_heads
        qh, kh, vh = (t.reshape(batch, height * width, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        if mask is None:
            out = torch.softmax((qh * self.scale) @ kh.transpose(-1, -2), dim=-1) @ vh
        else:
            out = masks.masked_attention(qh, kh, vh, mask, self.scale)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(batch, height, width, channels)
        return self.proj(out)

    def keys_per_query(self) -> float:
        """Mean number of keys a query attends to (what the attention's cost is proportional to)."""
        tokens = self.grid * self.grid
        if self.attention == "full":
            return float(tokens)
        if self.attention in REGION_ARMS:
            return float(self.topk * tokens // (self.n_win * self.n_win))
        return self.static_mask.sum(-1).float().mean().item()


class IsotropicBlock(nn.Module):
    """Pre-norm attention and pre-norm MLP, each with a residual, on (B, H, W, C): no convolutions."""

    def __init__(self, config: IsotropicConfig, index: int, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = config.dim
        shifted = config.attention == "swin" and index % 2 == 1
        self.attn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PatternAttention(
            dim, config.heads, config.grid, config.attention, config.n_win, config.topk, shifted
        )
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(config.mlp_ratio * dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.attn_norm(x)))
        return x + self.drop_path(self.mlp(self.mlp_norm(x)))


class IsotropicNet(nn.Module):
    """The network for an :class:`IsotropicConfig` (see the module docstring).

    Args:
        config: the arm.  num_classes: classifier outputs (0: the pooled features).
        in_chans: input channels.  drop_path_rate: stochastic depth of the last block (linear from 0).
    """

    def __init__(
        self, config: IsotropicConfig, *, num_classes: int = 10, in_chans: int = 3, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.config, self.num_classes, self.in_chans = config, num_classes, in_chans
        self.patch_embed = nn.Conv2d(in_chans, config.dim, config.patch, stride=config.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid, config.grid, config.dim))
        rates = [drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(IsotropicBlock(config, i, rate) for i, rate in enumerate(rates))
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, num_classes) if num_classes else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, P, P) -> (B, H, W, C): one token per patch, plus its position embedding."""
        size = self.config.image_size
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2:] != (size, size):
            raise ValueError(f"x must be an image batch (B, {self.in_chans}, {size}, {size}), got {tuple(x.shape)}")
        return self.patch_embed(x).permute(0, 2, 3, 1) + self.pos_embed

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) embedded tokens -> (B, H, W, C) after all blocks and the final norm."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, P, P) -> (B, num_classes)."""
        return self.head(self.forward_tokens(self.embed(x)).mean(dim=(1, 2)))


def isotropic_macs(model: IsotropicNet) -> dict[str, int]:
    """Multiply-adds of one image, by part: what each arm's pattern costs when computed sparsely.

    ``embed`` (patch conv), ``linear`` (qkv, proj, MLP, head), ``attention`` (q k^T and attn v over each
    query's kept keys), ``routing`` (region means and the region-level q k^T of BRA; the oracle's routing
    costs a full attention). Norms, softmax and adds are left out, as fvcore and the paper leave them.
    """
    config = model.config
    tokens, dim = config.grid**2, config.dim
    hidden = int(config.mlp_ratio * dim)
    regions = config.n_win**2
    linear = config.depth * tokens * (3 * dim * dim + dim * dim + 2 * dim * hidden) + dim * model.num_classes
    attention = routing = 0
    for block in model.blocks:
        attention += 2 * tokens * round(block.attn.keys_per_query()) * dim
        if config.attention == "bra":
            routing += regions * regions * dim
        elif config.attention == "oracle":
            routing += tokens * tokens * dim
    embed = tokens * dim * model.in_chans * config.patch**2
    return {"embed": embed, "linear": linear, "attention": attention, "routing": routing,
            "total": embed + linear + attention + routing}  # fmt: skip


def receptive_field(model: IsotropicNet, image: torch.Tensor) -> torch.Tensor:
    """(N, N) bool, measured: ``rf[t, s]`` is True when output token t's gradient reaches input token s.

    The input-gradient receptive field of every final token for one image (1, in_chans, P, P): the
    embedded tokens are repeated N times, copy t back-propagates the sum of output token t, and the
    non-zero rows of the gradient are the input tokens that token t depends on. Masked keys get an
    exactly zero gradient, so the answer is exact, not a threshold (a dependence whose gradient happens to
    vanish at this input would be missed; with random weights and a random direction that has probability 0).
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be one image (1, C, P, P), got {tuple(image.shape)}")
    model = model.eval()
    side = model.config.grid
    tokens = side * side
    with torch.no_grad():
        embedded = model.embed(image)  # (1, H, W, C)
    state = torch.get_rng_state()
    torch.manual_seed(0)  # random routing: a reproducible draw (each copy t is measured under its own draw)
    inputs = embedded.expand(tokens, -1, -1, -1).clone().requires_grad_(True)  # (N, H, W, C)
    out = model.forward_tokens(inputs).reshape(tokens, tokens, -1)  # (N copies, N tokens, C)
    torch.set_rng_state(state)
    picked = out[torch.arange(tokens), torch.arange(tokens)]  # copy t's output token t: (N, C)
    # A fixed random direction, not the plain sum: the final LayerNorm's outputs always sum to its bias, so
    # the sum's gradient is zero (up to rounding) whatever the token depends on.
    direction = torch.randn(picked.shape[-1], generator=torch.Generator().manual_seed(0)).to(picked)
    (grad,) = torch.autograd.grad((picked * direction).sum(), inputs)
    return grad.reshape(tokens, tokens, -1).abs().sum(-1) > 0


def create_isotropic(name: str, *, num_classes: int = 10, drop_path_rate: float = 0.0, **overrides) -> IsotropicNet:
    """The arm called ``name`` (``isotropic_<attention>``); ``overrides`` are :class:`IsotropicConfig` fields
    (``depth``, ``dim``, ``topk``, ...) and ``in_chans``."""
    if name not in ISOTROPIC_CONFIGS:
        raise ValueError(f"unknown isotropic model {name!r}; known: {', '.join(ISOTROPIC_CONFIGS)}")
    in_chans = overrides.pop("in_chans", 3)
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unknown option(s) {unknown}; allowed: in_chans and {list(CONFIG_KEYS)}"
        )
    config = replace(ISOTROPIC_CONFIGS[name], **overrides) if overrides else ISOTROPIC_CONFIGS[name]
    return IsotropicNet(config, num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate)
