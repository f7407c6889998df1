"""Checks of a BiFormer's arguments, run before anything is built: each error names the field, what it was and
what is allowed, instead of a shape error deep inside a forward pass (or a model that builds and is wrong).
"""

from __future__ import annotations

import math
import numbers

import torch

from bralib.errors import UsageError


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_kernel(name: str, value: object) -> None:
    """A depthwise conv kernel with 'same' padding (k // 2): 0 for none, else odd, or the map would change size."""
    if not _is_int(value) or value < 0 or (value > 0 and value % 2 == 0):
        raise UsageError(f"{name} must be 0 (none) or an odd kernel size (1, 3, 5, ...), got {value!r}")


def _check_stages(config) -> None:
    """Per-stage fields: positive widths, depths and heads; heads dividing widths; topk and n_win in range."""
    for name in ("dims", "depths", "heads"):
        values = getattr(config, name)
        if not all(_is_int(v) and v >= 1 for v in values):
            raise UsageError(f"{name} must be positive integers, one per stage, got {values!r}")
    for stage, (dim, heads, topk, n_win) in enumerate(
        zip(config.dims, config.heads, config.topks, config.n_wins, strict=True), start=1
    ):
        if dim % heads:
            raise UsageError(f"stage {stage}: dims={dim} is not divisible by heads={heads}: heads must divide dims")
        if not _is_int(n_win) or n_win < 1:
            raise UsageError(f"stage {stage}: n_win must be a positive integer, got {n_win!r}")
        if topk is not None and (not _is_int(topk) or not 1 <= topk <= n_win * n_win):
            raise UsageError(
                f"stage {stage}: topk must be None (global attention) or an integer in [1, n_win**2] = "
                f"[1, {n_win * n_win}], got {topk!r}"
            )
    if config.stem == "overlapped" and config.dims[0] % 2:
        raise UsageError(
            f"the overlapped stem halves dims[0] in its first conv: dims[0] must be even, got {config.dims[0]}"
        )


def _check_design_size(config) -> None:
    """Without auto_pad, every BRA stage's map at the design input size must split into n_win x n_win regions."""
    size = config.input_size
    for stage, (topk, n_win) in enumerate(zip(config.topks, config.n_wins, strict=True), start=1):
        side = -(-size // (4 * 2 ** (stage - 1)))  # every downsampling rounds up
        if topk is not None and side % n_win:
            raise UsageError(
                f"stage {stage}: n_win={n_win} does not divide its {side}x{side} map at input_size={size}: use an "
                f"n_win that divides {side}, another input_size, or auto_pad=True (pads each map to a multiple)"
            )


def check_biformer_args(
    config,
    num_classes: object,
    in_chans: object,
    drop_path_rate: object,
    auto_pad: object,
) -> None:
    """Refuse a BiFormer that would not build, or would build and fail (or be wrong) only at forward time.

    Args:
        config: a :class:`bralib.models.BiFormerConfig`; the other arguments are those of
            :class:`bralib.models.BiFormer`.
    """
    if not _is_int(in_chans) or in_chans < 1:
        raise UsageError(f"in_chans must be a positive integer (3 for RGB images, 1 for grey), got {in_chans!r}")
    if not _is_int(num_classes) or num_classes < 0:
        raise UsageError(f"num_classes must be >= 0 (an integer; 0: no classifier), got {num_classes!r}")
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, numbers.Real) or not 0 <= drop_path_rate < 1:
        raise UsageError(
            f"drop_path_rate must be in [0, 1) (the stochastic-depth rate of the last block), got {drop_path_rate!r}"
        )
    if not isinstance(auto_pad, bool):
        raise UsageError(f"auto_pad must be True or False, got {auto_pad!r}")
    _check_stages(config)
    ratio = config.mlp_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not (math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"mlp_ratio must be a positive number (the MLP's hidden width / C), got {ratio!r}")
    if int(ratio * min(config.dims)) < 1:
        raise UsageError(f"mlp_ratio={ratio} gives an MLP with no hidden channel at dims={min(config.dims)}")
    _check_kernel("pos_conv", config.pos_conv)
    _check_kernel("local_kernel", config.local_kernel)
    if not _is_int(config.input_size) or config.input_size < 1:
        raise UsageError(f"input_size must be a positive integer (the image side), got {config.input_size!r}")
    if not auto_pad:
        _check_design_size(config)


def check_images(x: object, in_chans: int) -> None:
    """x: a floating-point image batch (B, in_chans, H, W) with H, W >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor image batch (B, {in_chans}, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise UsageError(f"x must be an image batch (B, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise UsageError(
            f"x must be a floating-point tensor, got {x.dtype}: convert images with x.float() / 255 and normalise "
            "them (model.pretrained_cfg gives the mean and std)"
        )
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise UsageError(f"x has an empty image ({x.shape[2]}x{x.shape[3]} pixels): H and W must be at least 1")
