"""Official BiFormer checkpoints: load them into bralib's models and export bralib's weights in their layout.

The released code names modules by position (``downsample_layers.0.3``, ``mlp.0``) and keeps a few
historical names (``attn.wo``); bralib names say what a module is (``stem.conv2``, ``mlp.fc1``,
``attn.proj``). :data:`KEY_TABLE` is the whole correspondence, used in both directions.

Checkpoints are read with ``torch.load(..., weights_only=True)``: tensors only, never arbitrary pickled code;
:func:`bralib.io.load_torch_file` first checks every zip entry's CRC-32, so a damaged file never loads.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from bralib.errors import CheckpointError, CheckpointNotFoundError
from bralib.io import load_torch_file
from bralib.models.biformer import BiFormer

# (official module, bralib module, which blocks the row applies to). {s} is a stage, {b} a block of it.
# Parameters and buffers keep their own names (weight, bias, running_mean, ...).
KEY_TABLE: tuple[tuple[str, str, str], ...] = (
    ("downsample_layers.0.0", "stem.conv1", "any"),  # .2 is the GELU: no weights
    ("downsample_layers.0.1", "stem.norm1", "any"),
    ("downsample_layers.0.3", "stem.conv2", "any"),
    ("downsample_layers.0.4", "stem.norm2", "any"),
    ("downsample_layers.{s}.0", "stages.{s}.downsample.conv", "any"),
    ("downsample_layers.{s}.1", "stages.{s}.downsample.norm", "any"),
    ("stages.{s}.{b}.pos_embed", "stages.{s}.blocks.{b}.pos_conv", "any"),
    ("stages.{s}.{b}.norm1", "stages.{s}.blocks.{b}.attn_norm", "any"),
    ("stages.{s}.{b}.attn.qkv.qkv", "stages.{s}.blocks.{b}.attn.qkv", "bra"),
    ("stages.{s}.{b}.attn.wo", "stages.{s}.blocks.{b}.attn.proj", "bra"),
    ("stages.{s}.{b}.attn.lepe", "stages.{s}.blocks.{b}.attn.lce", "bra"),  # depthwise conv on V
    ("stages.{s}.{b}.attn.qkv", "stages.{s}.blocks.{b}.attn.qkv", "global"),
    ("stages.{s}.{b}.attn.proj", "stages.{s}.blocks.{b}.attn.proj", "global"),
    ("stages.{s}.{b}.attn.lepe", "stages.{s}.blocks.{b}.attn.lepe", "global"),  # depthwise conv on x
    ("stages.{s}.{b}.norm2", "stages.{s}.blocks.{b}.mlp_norm", "any"),
    ("stages.{s}.{b}.mlp.0", "stages.{s}.blocks.{b}.mlp.fc1", "any"),  # .1 Identity (no MLP dwconv), .2 GELU
    ("stages.{s}.{b}.mlp.3", "stages.{s}.blocks.{b}.mlp.fc2", "any"),
    ("norm", "head_norm", "any"),
    ("head", "head", "any"),
)
HEAD_MODULES = ("norm", "head")  # official modules that a features_only model does not have


class OfficialWeightsError(CheckpointError):
    """A checkpoint does not fit the model: missing or unexpected keys, or shapes that differ."""


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{s\}", r"(?P<s>\d+)").replace(r"\{b\}", r"(?P<b>\d+)"))


_ROWS = [(_pattern(official), _pattern(ours), official, ours, where) for official, ours, where in KEY_TABLE]


def _stage_kind(model: BiFormer, stage: str | None) -> str | None:
    """'bra' or 'global' for a stage index given as text; None when the model has no such stage."""
    if stage is None:
        return "any"
    topks = model.config.topks
    return None if int(stage) >= len(topks) else ("global" if topks[int(stage)] is None else "bra")


def _translate(key: str, model: BiFormer, to_official: bool) -> str | None:
    """One state-dict key from one layout to the other; None when no row of :data:`KEY_TABLE` fits."""
    module, _, leaf = key.rpartition(".")
    for official_re, ours_re, official, ours, where in _ROWS:
        source_re, target = (ours_re, official) if to_official else (official_re, ours)
        match = source_re.fullmatch(module)
        if match is None:
            continue
        fields = match.groupdict()
        kind = _stage_kind(model, fields.get("s"))
        if kind is None or (where != "any" and kind != where):
            continue
        return f"{target.format(**fields)}.{leaf}"
    return None


def official_key(key: str, model: BiFormer) -> str | None:
    """bralib state-dict key -> the released code's name for it (None if it has none)."""
    return _translate(key, model, to_official=True)


def bralib_key(key: str, model: BiFormer) -> str | None:
    """The released code's state-dict key -> bralib's name for it in ``model`` (None if it has none)."""
    return _translate(key, model, to_official=False)


def _check_layout(model: nn.Module) -> BiFormer:
    if not isinstance(model, BiFormer):
        raise TypeError(f"model must be a bralib BiFormer (from bralib.create_model), got {type(model).__name__}")
    config = model.config
    if config.stem != "overlapped" or config.downsample != "conv3x3":
        raise ValueError(
            "the official key layout is that of the released BiFormer (overlapped stem, conv3x3 downsampling); "
            f"this model has stem={config.stem!r}, downsample={config.downsample!r}"
        )
    return model


# Where each official module comes in the released model's state dict: it builds all downsampling layers
# first, then the stages, then the head; inside a block pos_embed, norm1, attn, norm2, mlp; inside BRA the
# LCE conv (lepe) before qkv and wo, inside stage 4's attention qkv, proj, lepe.
_TOP_ORDER = {"downsample_layers": 0, "stages": 1, "norm": 2, "head": 3}
_BLOCK_ORDER = ("pos_embed", "norm1", "attn", "norm2", "mlp")
_ATTN_ORDER = {"bra": ("lepe", "qkv", "wo"), "global": ("qkv", "proj", "lepe")}


def _official_rank(key: str, model: BiFormer) -> tuple:
    parts = key.split(".")
    rank: list = [_TOP_ORDER[parts[0]]]
    if parts[0] == "downsample_layers":
        rank += [int(parts[1]), int(parts[2])]
    elif parts[0] == "stages":
        rank += [int(parts[1]), int(parts[2]), _BLOCK_ORDER.index(parts[3])]
        if parts[3] == "attn":
            rank.append(_ATTN_ORDER[_stage_kind(model, parts[1])].index(parts[4]))
    return tuple(rank)


def to_official_state_dict(model: BiFormer) -> dict[str, torch.Tensor]:
    """``model``'s weights under the released code's names and in its order (tensors shared, not copied).

    ``load_official_weights(other, to_official_state_dict(model))`` gives ``other`` the weights of ``model``,
    and ``to_official_state_dict(load_official_weights(model, official))`` equals ``official`` key for key,
    in the same order.
    """
    _check_layout(model)
    state = {}
    for key, value in model.state_dict().items():
        name = official_key(key, model)
        if name is None:  # every bralib module has a row; reaching this means the table is out of date
            raise RuntimeError(f"bralib key {key!r} has no official name in bralib.models.weights.KEY_TABLE")
        state[name] = value
    # A stable sort: parameters and buffers of one module keep PyTorch's order (weight, bias, running_mean, ...).
    return dict(sorted(state.items(), key=lambda item: _official_rank(item[0], model)))


def read_checkpoint(source: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint: a file path or a mapping, whole (weights under "model") or bare."""
    if isinstance(source, str | os.PathLike):
        if not os.path.isfile(source):
            raise CheckpointNotFoundError(f"no checkpoint file at {str(source)!r}")
        # Training checkpoints of the released code also store its command-line arguments, an
        # argparse.Namespace (a plain bag of attributes): allow that one class, nothing else. The file is
        # checked whole first (every zip entry's CRC-32, a .sha256 record when there is one).
        try:
            source = load_torch_file(
                source, what="weights file", allowed_globals=[argparse.Namespace], allow_legacy=True
            )
        except CheckpointError as err:
            raise OfficialWeightsError(str(err)) from err.__cause__
    if not isinstance(source, Mapping):
        raise TypeError(f"a checkpoint must be a path or a mapping of names to tensors, got {type(source).__name__}")
    state = source["model"] if isinstance(source.get("model"), Mapping) else source
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise OfficialWeightsError(
            f"a state dict maps names to tensors, but these entries are not tensors: {group_keys(not_tensors)}; "
            "for a whole training checkpoint, the weights must sit under its 'model' entry"
        )
    return dict(state)


def load_official_weights(model: BiFormer, source: str | os.PathLike | Mapping) -> BiFormer:
    """Load a checkpoint in the released code's layout into a bralib model, strictly.

    Args:
        model: a BiFormer whose architecture matches the checkpoint (``create_model("biformer_tiny")`` for
            ``biformer_tiny_in1k.pth``). A ``features_only`` model takes the backbone and skips the file's
            classifier (``norm.*``, ``head.*``).
        source: a path to the ``.pth`` file, or a state dict; a whole checkpoint with its weights under
            ``"model"`` or the bare state dict.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        OfficialWeightsError: keys missing from the checkpoint, keys the model has no place for, or shapes
            that differ; the message lists them all, grouped by module and in the official names.
    """
    _check_layout(model)
    state = read_checkpoint(source)
    if model.features_only:
        state = {key: value for key, value in state.items() if key.split(".")[0] not in HEAD_MODULES}
    expected = model.state_dict()
    mapped, unexpected = {}, []
    for key, value in state.items():
        ours = bralib_key(key, model)
        if ours is None or ours not in expected:
            unexpected.append(key)
        else:
            mapped[ours] = (key, value)
    missing = [official_key(key, model) for key in expected if key not in mapped]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint ({len(missing)} keys):\n{group_keys(missing)}")
    if unexpected:
        problems.append(f"in the checkpoint but not in this model ({len(unexpected)} keys):\n{group_keys(unexpected)}")
    for ours, (key, value) in mapped.items():
        if value.shape != expected[ours].shape:
            problems.append(
                f"shape mismatch for {key} (bralib {ours}): checkpoint {tuple(value.shape)}, "
                f"model {tuple(expected[ours].shape)}"
            )
    if problems:
        name = type(model).__name__
        header = f"the checkpoint does not fit this {name} ({_describe(model)}):"
        raise OfficialWeightsError("\n".join([header, *problems]))
    model.load_state_dict({ours: value for ours, (_, value) in mapped.items()}, strict=True)
    return model


def _describe(model: BiFormer) -> str:
    config = model.config
    return f"dims={config.dims}, depths={config.depths}, num_classes={model.num_classes}"


def group_keys(keys: list[str], limit: int = 24) -> str:
    """Keys grouped by module, one module a line: ``  stages.0.1.attn.qkv.qkv.{weight, bias}``."""
    modules: dict[str, list[str]] = {}
    for key in keys:
        module, _, leaf = key.rpartition(".")
        modules.setdefault(module, []).append(leaf)
    lines = [
        f"  {module}.{leaves[0]}" if len(leaves) == 1 else f"  {module}.{{{', '.join(leaves)}}}"
        for module, leaves in modules.items()
    ]
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more modules"]
    return "\n".join(line.replace("  .", "  ") for line in lines)
