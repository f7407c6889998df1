"""BiFormer: a four-stage vision transformer whose blocks use Bi-Level Routing Attention (Zhu et al., CVPR 2023).

    image (B, 3, H, W)
      -> stem: overlapped patch embedding, two 3x3 stride-2 convs                  (B, C1, H/4,  W/4)
      -> stage 1: blocks                                                           (B, C1, H/4,  W/4)
      -> stage 2: 3x3 stride-2 conv + BatchNorm, blocks                            (B, C2, H/8,  W/8)
      -> stage 3: ...                                                              (B, C3, H/16, W/16)
      -> stage 4: ... (global attention instead of BRA)                            (B, C4, H/32, W/32)
      -> head: BatchNorm, global average pool, Linear                              (B, num_classes)

    block:  x = x + dwconv3x3(x)                   convolutional position encoding
            x = x + drop_path(attn(norm(x)))       BRA (stages 1-3) or global attention (stage 4)
            x = x + drop_path(mlp(norm(x)))        Linear, GELU, Linear with hidden width 3C

Every variant is one row of :data:`MODEL_CONFIGS` below; :func:`bralib.create_model` builds them by name.
The released variants use ``scale_mode="official"``: the released code scales token attention by
``qk_dim ** -0.5`` (the full width) where the paper's formula has ``head_dim ** -0.5``. Their weights were
trained that way, so matching it is what makes them give their outputs; see ``bralib.ops.attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bralib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bralib.models.layers import DropPath, GlobalAttention, Mlp, init_weights
from bralib.models.validate import check_biformer_args, check_images
from bralib.ops import BiLevelRoutingAttention

STEMS = ("overlapped", "patchify")
DOWNSAMPLES = ("conv3x3", "patch_merging")


@dataclass(frozen=True)
class BiFormerConfig:
    """The architecture of one variant. Every tuple has one entry per stage.

    dims: channels per stage.  depths: blocks per stage.  heads: attention heads per stage.
    topks: regions routed per region in each BRA stage; ``None`` makes the stage plain global attention
        (the released config's ``-2``).
    n_win: regions per side S, one int for all stages or one per stage (ignored by global-attention stages).
    mlp_ratio: MLP hidden width / C.
    stem: ``"overlapped"`` (conv3x3 s2, BN, GELU, conv3x3 s2, BN) or ``"patchify"`` (conv4x4 s4, BN).
    downsample: between stages, ``"conv3x3"`` (conv3x3 s2, BN) or ``"patch_merging"`` (BN, conv2x2 s2).
    pos_conv: kernel of the convolutional position encoding (depthwise), 0 for none.
    local_kernel: kernel of BRA's local context enhancement and of global attention's LePE (depthwise).
    scale_mode: BRA's token-attention scale, ``"official"`` (qk_dim ** -0.5) or ``"paper"`` (head_dim ** -0.5).
    route_from: BRA's region-level q and k: ``"qk"``, region means of the computed q and k (the released
        code, no extra cost) or ``"x"``, float32 projections of region means of x (routes under AMP exactly
        as in float32, for S*S*dim*2*qk_dim extra multiply-adds per block).
    input_size: the image side the variant is designed for.  note: what the variant is for.
    """

    dims: tuple[int, ...]
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    topks: tuple[int | None, ...]
    n_win: int | tuple[int, ...] = 7
    mlp_ratio: float = 3.0
    stem: str = "overlapped"
    downsample: str = "conv3x3"
    pos_conv: int = 3
    local_kernel: int = 5
    scale_mode: str = "official"
    route_from: str = "qk"
    input_size: int = 224
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n = len(self.dims)
        for name in ("depths", "heads", "topks"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but dims has {n}: one per stage")
        if isinstance(self.n_win, tuple) and len(self.n_win) != n:
            raise ValueError(f"n_win has {len(self.n_win)} entries but dims has {n}: give one int or one per stage")
        per_stage = zip(self.dims, self.heads, self.topks, self.n_wins, strict=True)
        for stage, (dim, heads, topk, n_win) in enumerate(per_stage):
            if dim <= 0 or heads <= 0 or dim % heads:
                raise ValueError(f"stage {stage}: heads={heads} must be positive and divide dims={dim}")
            if topk is not None and not 1 <= topk <= n_win * n_win:
                raise ValueError(f"stage {stage}: topk={topk} must be None (global attention) or in [1, {n_win**2}]")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {self.downsample!r}")

    @property
    def n_wins(self) -> tuple[int, ...]:
        return self.n_win if isinstance(self.n_win, tuple) else (self.n_win,) * len(self.dims)

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)


def _released(dims, depths, heads, **kwargs) -> BiFormerConfig:
    return BiFormerConfig(dims=dims, depths=depths, heads=heads, topks=(1, 4, 16, None), **kwargs)


# Table 6 of the paper walks from Swin-T's layout (with BRA in place of shifted windows) to BiFormer-S, one
# change per row. The first row is the released code's "BiFormer-STL" (biformer_stl.py): Swin-T's depths and
# widths, a 4x4 patchify stem and BN + 2x2-conv patch merging, MLP ratio 4, no position encoding, 32 channels per
# head in the BRA stages and 8 heads in stage 4's global attention (its default there).
_SWIN_LAYOUT = dict(dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), heads=(3, 6, 12, 8), topks=(1, 4, 16, None),
                    mlp_ratio=4.0, stem="patchify", downsample="patch_merging", pos_conv=0)  # fmt: skip
_DEEPER_LAYOUT = dict(dims=(64, 128, 256, 512), depths=(4, 4, 18, 4), heads=(2, 4, 8, 8), topks=(1, 4, 16, None))

MODEL_CONFIGS: dict[str, BiFormerConfig] = {
    # --- released (ImageNet-1K, 224x224): 13,142,760 / 25,536,232 / 56,804,968 parameters, 2.23 / 4.49 / 9.80 GMACs
    "biformer_tiny": _released((64, 128, 256, 512), (2, 2, 8, 2), (2, 4, 8, 8), note="BiFormer-T (Table 1)"),
    "biformer_small": _released((64, 128, 256, 512), (4, 4, 18, 4), (2, 4, 8, 8), note="BiFormer-S (Table 1)"),
    "biformer_base": _released((96, 192, 384, 768), (4, 4, 18, 4), (3, 6, 12, 8), note="BiFormer-B (Table 1)"),
    # --- teaching and testing: the same design, small enough for a laptop CPU; paper's attention scale
    "biformer_nano": BiFormerConfig(
        dims=(32, 64, 128, 160),
        depths=(1, 1, 2, 1),
        heads=(1, 2, 4, 5),
        topks=(4, 4, 2, None),
        n_win=(4, 4, 2, 1),
        scale_mode="paper",
        input_size=64,
        note="64x64 inputs (maps 16, 8, 4, 2): 0.94M parameters with 10 classes, trains on 2 CPU cores",
    ),
    "biformer_micro": BiFormerConfig(
        dims=(32, 64, 128, 256),
        depths=(1, 1, 3, 1),
        heads=(1, 2, 4, 8),
        topks=(4, 8, 16, None),
        n_win=7,
        scale_mode="paper",
        input_size=112,
        note="112x112 inputs (maps 28, 14, 7, 4): BiFormer-T's design at half resolution, 1.9M parameters",
    ),
    # --- Table 6: the ablation path from the Swin-T layout to BiFormer-S
    "table6_swin_layout": BiFormerConfig(
        **_SWIN_LAYOUT, note="Table 6 row 1: Swin-T layout with BRA (paper 29M, 4.6G; README of the release 28.4M)"
    ),
    "table6_overlapped_embed": BiFormerConfig(
        **{**_SWIN_LAYOUT, "stem": "overlapped", "downsample": "conv3x3"},
        note="Table 6 row 2: + overlapped patch embedding (31M, 4.9G)",
    ),
    "table6_deeper": BiFormerConfig(**_DEEPER_LAYOUT, pos_conv=0, note="Table 6 row 3: + deeper layout (25M, 4.5G)"),
    "table6_conv_pos": BiFormerConfig(
        **_DEEPER_LAYOUT, note="Table 6 row 4: + convolutional position encoding (26M, 4.5G) = BiFormer-S"
    ),
}


# ---------------------------------------------------------------- stem and downsampling (NCHW in, NCHW out)


class OverlappedStem(nn.Module):
    """Overlapped patch embedding: two 3x3 stride-2 convs (3 -> C/2 -> C), so neighbouring patches share pixels."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, dim, ceil(H/4), ceil(W/4))."""
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NCHW map at the bottom and right so H and W are multiples of ``multiple`` (no-op if they are)."""
    pad_h, pad_w = (-x.shape[2]) % multiple, (-x.shape[3]) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class PatchifyStem(nn.Module):
    """Non-overlapped patch embedding (ViT/Swin): one 4x4 stride-4 conv, then BatchNorm."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, 4, stride=4)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, dim, ceil(H/4), ceil(W/4))."""
        return self.norm(self.conv(pad_to_multiple(x, 4)))


class ConvDownsample(nn.Module):
    """Between stages: a 3x3 stride-2 conv (C -> C') and BatchNorm; overlapping like the stem."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, H, W) -> (B, out_dim, ceil(H/2), ceil(W/2))."""
        return self.norm(self.conv(x))


class PatchMerging(nn.Module):
    """Swin-style patch merging as the released BiFormer-STL does it: BatchNorm, then a 2x2 stride-2 conv."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, out_dim, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, H, W) -> (B, out_dim, ceil(H/2), ceil(W/2))."""
        return self.conv(pad_to_multiple(self.norm(x), 2))


# ---------------------------------------------------------------- block and stage


class BiFormerBlock(nn.Module):
    """Conv position encoding, then pre-norm attention and pre-norm MLP, each with a residual (channels-last).

    Args:
        dim: channels C.  num_heads: attention heads.
        topk: routed regions (BRA), or None for global attention.  n_win: regions per side (BRA only).
        mlp_ratio: MLP hidden width / C.  drop_path: stochastic-depth rate of both residual branches.
        pos_conv: kernel of the depthwise position-encoding conv, 0 for none.
        local_kernel: BRA's LCE / global attention's LePE kernel.
        scale_mode, route_from, auto_pad, backend: passed to :class:`bralib.ops.BiLevelRoutingAttention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        topk: int | None,
        n_win: int = 7,
        mlp_ratio: float = 3.0,
        drop_path: float = 0.0,
        pos_conv: int = 3,
        local_kernel: int = 5,
        scale_mode: str = "official",
        route_from: str = "qk",
        auto_pad: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.pos_conv = nn.Conv2d(dim, dim, pos_conv, padding=pos_conv // 2, groups=dim) if pos_conv else None
        self.attn_norm = nn.LayerNorm(dim, eps=1e-6)
        if topk is None:
            self.attn = GlobalAttention(dim, num_heads, lepe_kernel=local_kernel)
        else:
            self.attn = BiLevelRoutingAttention(
                dim, num_heads, n_win=n_win, topk=topk, side_dwconv=local_kernel,
                auto_pad=auto_pad, scale_mode=scale_mode, route_from=route_from, backend=backend,
            )  # fmt: skip
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path)

    @property
    def routes(self) -> bool:
        """Whether this block's attention is BRA (and so has a routing index)."""
        return isinstance(self.attn, BiLevelRoutingAttention)

    def forward(
        self, x: torch.Tensor, return_routing: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, H, W, C) -> (B, H, W, C); with ``return_routing`` also the index (B, S*S, topk) or None."""
        if self.pos_conv is not None:  # the conv runs on an NCHW view of the channels-last tensor: no copy
            x = x + self.pos_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        index = None
        if return_routing and self.routes:
            attended, index = self.attn(self.attn_norm(x), return_routing=True)
        else:
            attended = self.attn(self.attn_norm(x))
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.mlp_norm(x)))
        return (x, index) if return_routing else x


class BiFormerStage(nn.Module):
    """An optional downsampling layer, then ``len(blocks)`` blocks at one resolution (NCHW in and out).

    With ``grad_checkpointing`` (set by :meth:`BiFormer.set_grad_checkpointing`) each block keeps only its input
    for the backward and runs its forward again there: activation memory of one block at a time, for about one
    more forward pass of compute.
    """

    grad_checkpointing: bool = False

    def __init__(self, downsample: nn.Module | None, blocks: list[BiFormerBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, x: torch.Tensor, return_routing: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor | None]]:
        """(B, C_in, H, W) -> (B, C, H', W'); with ``return_routing`` also each block's index (or None)."""
        if self.downsample is not None:
            x = self.downsample(x)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C): blocks work channels-last
        indices = []
        for block in self.blocks:
            if return_routing:
                x, index = block(x, return_routing=True)
                indices.append(index)
            elif self.grad_checkpointing and torch.is_grad_enabled():
                # use_reentrant=False: the supported mode; it restores the RNG state, so drop-path masks (and so
                # the gradients) are exactly those of the plain forward.
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W), a view
        return (x, indices) if return_routing else x


# ---------------------------------------------------------------- the network


class Routing(NamedTuple):
    """Where one BRA block routed: ``index[b, r]`` lists the ``topk`` regions that region r attends to.

    Regions are numbered row-major on an ``n_win`` x ``n_win`` grid over the block's feature map of size
    ``map_size`` (H, W); with ``auto_pad`` the grid covers the map zero-padded to multiples of ``n_win``.
    """

    stage: int
    block: int
    index: torch.Tensor  # (B, S*S, topk) long
    n_win: int
    map_size: tuple[int, int]


@dataclass(frozen=True)
class FeatureInfo:
    """One output map of a ``features_only`` model: its stage, channels and stride (input pixels per map pixel)."""

    stage: int
    channels: int
    stride: int


class BiFormer(nn.Module):
    """The BiFormer network for a :class:`BiFormerConfig`.

    Args:
        config: the architecture (see :data:`MODEL_CONFIGS`).
        num_classes: classifier outputs; 0 gives the pooled features instead of logits.
        in_chans: input channels.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over all blocks.
        auto_pad: let BRA zero-pad maps to multiples of ``n_win`` (any input size; dense prediction).
        backend: BRA backend name (``"auto"``, or see ``bralib.ops.BACKENDS``).
        features_only: build no head; ``forward`` returns the list of the stages' NCHW maps (strides 4, 8,
            16, 32), described by ``feature_info``.
    """

    def __init__(
        self,
        config: BiFormerConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        auto_pad: bool = False,
        backend: str = "auto",
        features_only: bool = False,
    ) -> None:
        super().__init__()
        check_biformer_args(config, num_classes, in_chans, drop_path_rate, auto_pad)  # clear errors up front
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
        self.config, self.num_classes, self.features_only = config, num_classes, features_only
        self.in_chans, self.auto_pad = in_chans, auto_pad
        dims = config.dims
        stem = OverlappedStem if config.stem == "overlapped" else PatchifyStem
        self.stem = stem(in_chans, dims[0])
        downsample = ConvDownsample if config.downsample == "conv3x3" else PatchMerging
        # One rate per block, growing linearly from 0; plain Python so the model also builds on the meta device.
        rates = [drop_path_rate * i / max(config.num_blocks - 1, 1) for i in range(config.num_blocks)]
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, config.depths, strict=True)):
            first = sum(config.depths[:i])
            blocks = [
                BiFormerBlock(
                    dim,
                    config.heads[i],
                    config.topks[i],
                    n_win=config.n_wins[i],
                    mlp_ratio=config.mlp_ratio,
                    drop_path=rates[first + j],
                    pos_conv=config.pos_conv,
                    local_kernel=config.local_kernel,
                    scale_mode=config.scale_mode,
                    route_from=config.route_from,
                    auto_pad=auto_pad,
                    backend=backend,
                )
                for j in range(depth)
            ]
            self.stages.append(BiFormerStage(downsample(dims[i - 1], dim) if i else None, blocks))
        self.feature_info = [FeatureInfo(i, dim, 4 * 2**i) for i, dim in enumerate(dims)]
        if features_only:
            self.head_norm = self.head = None
        else:
            self.head_norm = nn.BatchNorm2d(dims[-1])
            self.head = nn.Linear(dims[-1], num_classes) if num_classes else nn.Identity()
        self.apply(init_weights)

    # ------------------------------------------------------------ forward passes

    def forward_stages(
        self, x: torch.Tensor, return_routing: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[Routing]]:
        """(B, in_chans, H, W) -> the four stages' NCHW maps (and, if asked, every BRA block's :class:`Routing`)."""
        self._check_input(x)
        x = self.stem(x)
        maps, routes = [], []
        for i, stage in enumerate(self.stages):
            if return_routing:
                x, indices = stage(x, return_routing=True)
                map_size = (x.shape[2], x.shape[3])
                routes += [Routing(i, j, index, self.config.n_wins[i], map_size)
                           for j, index in enumerate(indices) if index is not None]  # fmt: skip
            else:
                x = stage(x)
            maps.append(x)
        return (maps, routes) if return_routing else maps

    def _check_input(self, x: torch.Tensor) -> None:
        check_images(x, self.in_chans)
        if not self.auto_pad:
            self._check_size(x.shape[2], x.shape[3])

    def _check_size(self, height: int, width: int) -> None:
        """Without ``auto_pad`` every BRA stage's map must split into n_win x n_win regions: say so up front."""
        config = self.config
        for stage, (topk, n_win) in enumerate(zip(config.topks, config.n_wins, strict=True)):
            if topk is None:
                continue
            stride = 4 * 2**stage  # every downsampling rounds up: the map is ceil(H / stride) x ceil(W / stride)
            map_h, map_w = -(-height // stride), -(-width // stride)
            if map_h % n_win or map_w % n_win:
                raise ValueError(
                    f"a {height}x{width} input gives stage {stage + 1} a {map_h}x{map_w} map, which does not split "
                    f"into {n_win}x{n_win} regions; use sides that are multiples of {_bra_multiple(config)} "
                    f"(e.g. {config.input_size}), or build the model with auto_pad=True "
                    "(create_model(name, auto_pad=True)) to pad each map and crop the result"
                )

    def forward_features(
        self, x: torch.Tensor, return_routing: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[Routing]]:
        """(B, in_chans, H, W) -> (B, C4, H/32, W/32) after the head's BatchNorm (and the routing, if asked)."""
        if self.head_norm is None:
            raise RuntimeError("a features_only model has no head norm: call forward() or forward_stages()")
        if return_routing:
            maps, routes = self.forward_stages(x, return_routing=True)
            return self.head_norm(maps[-1]), routes
        return self.head_norm(self.forward_stages(x)[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C4, h, w) features -> (B, num_classes) logits (or the pooled (B, C4) if ``pre_logits``)."""
        if self.head is None:
            raise RuntimeError("a features_only model has no classifier head")
        x = x.mean(dim=(2, 3))  # global average pool
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, in_chans, H, W) -> (B, num_classes); or the list of stage maps for ``features_only``."""
        if self.features_only:
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------ timm's conventions

    @property
    def num_features(self) -> int:
        """Channels of the pooled features the classifier reads (C4)."""
        return self.config.dims[-1]

    @property
    def pretrained_cfg(self) -> dict:
        """timm's description of how to feed the model: input size, normalisation, first conv and classifier.

        The normalisation and resizing are those of the released ImageNet evaluation (resize 256 bicubic,
        centre crop 224: ``crop_pct`` 0.875); ``architecture`` is the :func:`bralib.list_models` name whose
        config this model has (None for a changed config).
        """
        size = self.config.input_size
        return {
            "architecture": next((name for name, cfg in MODEL_CONFIGS.items() if cfg == self.config), None),
            "input_size": (self.in_chans, size, size),
            "fixed_input_size": not self.auto_pad,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "first_conv": "stem.conv1" if self.config.stem == "overlapped" else "stem.conv",
            "classifier": None if self.head is None else "head",
            "num_classes": self.num_classes,
            "paper_ids": "arXiv:2303.08810",
        }

    def get_classifier(self) -> nn.Module | None:
        """The classifier (``nn.Linear``, ``nn.Identity`` for num_classes=0, None for a features_only model)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: the pooled (B, C4) features).

        ``global_pool``: None keeps the pooling; ``"avg"``, the only one BiFormer has, is accepted too.
        """
        if self.head is None:
            raise RuntimeError("a features_only model has no classifier to reset")
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool must be None or 'avg' (BiFormer pools by the mean), got {global_pool!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
        weight = self.head_norm.weight
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        init_weights(head)
        self.head = head.to(device=weight.device, dtype=weight.dtype)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward instead of storing them (same gradients).

        Training at high resolution then holds the activations of one block at a time instead of all of them,
        for about one extra forward pass of compute. Only forward passes with gradients are affected.
        """
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the NCHW maps of some stages, and the final features.

        Args:
            x: (B, in_chans, H, W) images.
            indices: which stages: None for all four, an int n for the last n, or stage numbers (negative
                ones count from the end).
            norm: apply the head's BatchNorm to the last stage's map when it is taken.
            stop_early: run no stage after the last one taken.
            output_fmt: ``"NCHW"`` (the only layout BiFormer's stages produce).
            intermediates_only: return the list of maps only.

        Returns:
            The maps [(B, C_i, H / 2**(i+2), W / 2**(i+2)) for each taken stage i], in stage order; unless
            ``intermediates_only``, first the final features (B, C4, H/32, W/32) after the head's BatchNorm
            (the last map run, when ``stop_early`` ended before stage 4 or the model is ``features_only``).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' (BiFormer's stages are NCHW), got {output_fmt!r}")
        take = _take_indices(len(self.stages), indices)
        self._check_input(x)
        last = max(take) if stop_early else len(self.stages) - 1
        x = self.stem(x)
        maps = []
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in take:
                final = norm and i == len(self.stages) - 1 and self.head_norm is not None
                maps.append(self.head_norm(x) if final else x)
        if intermediates_only:
            return maps
        if self.head_norm is not None and last == len(self.stages) - 1:
            x = self.head_norm(x)
        return x, maps


def _take_indices(n_stages: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """Stage numbers (0-based, sorted) that ``indices`` of :meth:`BiFormer.forward_intermediates` means."""
    if indices is None:
        return list(range(n_stages))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= n_stages:
            raise ValueError(f"indices={indices} as a count must be in [1, {n_stages}] (the last n stages)")
        return list(range(n_stages - indices, n_stages))
    take = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -n_stages <= index < n_stages:
            raise ValueError(f"indices must be stage numbers in [-{n_stages}, {n_stages}), got {list(indices)}")
        take.append(index % n_stages)
    if not take:
        raise ValueError("indices is empty: name at least one stage")
    return sorted(set(take))


def _bra_multiple(config: BiFormerConfig) -> int:
    """The input sides that need no padding are the multiples of this number."""
    multiple = 1
    for stage, (topk, n_win) in enumerate(zip(config.topks, config.n_wins, strict=True)):
        if topk is not None:
            multiple = math.lcm(multiple, n_win * 4 * 2**stage)
    return multiple


def routing_maps(model: BiFormer, x: torch.Tensor) -> list[Routing]:
    """Every BRA block's routing for input ``x`` (B, in_chans, H, W), in network order, without gradients.

    Example (which regions region 0 of the first block attends to, for image 0)::

        routes = routing_maps(model.eval(), images)
        r = routes[0]                      # Routing(stage=0, block=0, index=(B, S*S, topk), n_win, map_size)
        r.index[0, 0]                      # topk region numbers, row-major on an n_win x n_win grid
    """
    with torch.no_grad():
        return model.forward_stages(x, return_routing=True)[1]


CONFIG_KEYS = tuple(f.name for f in fields(BiFormerConfig) if f.name != "note")
