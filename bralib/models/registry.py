"""Build models by name: :func:`create_model` and :func:`list_models`."""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path
from typing import Any

from bralib.models.biformer import CONFIG_KEYS, MODEL_CONFIGS, BiFormer
from bralib.models.isotropic import ISOTROPIC_CONFIGS, IsotropicNet, create_isotropic

# Variants whose ImageNet-1K weights the authors released (rayleizhu/BiFormer, README's "model" links), with
# the file name the official code saves them under when it fetches them (torch.hub).
OFFICIAL_CHECKPOINTS = {
    "biformer_tiny": ("BiFormer-T", "biformer_tiny_in1k.pth"),
    "biformer_small": ("BiFormer-S", "biformer_small_in1k.pth"),
    "biformer_base": ("BiFormer-B", "biformer_base_in1k.pth"),
}
MODEL_KEYS = ("in_chans", "auto_pad", "backend", "features_only")


def list_models(pattern: str = "*") -> list[str]:
    """Names :func:`create_model` knows, sorted; ``pattern`` filters them shell-style (``"biformer_*"``)."""
    return sorted(name for name in (*MODEL_CONFIGS, *ISOTROPIC_CONFIGS) if fnmatch.fnmatch(name, pattern))


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    pretrained: bool | str | Path = False,
    **overrides: Any,
) -> BiFormer | IsotropicNet:
    """The model called ``name``, freshly initialised.

    Args:
        name: one of :func:`list_models`.
        num_classes: classifier outputs (0: pooled features).
        drop_path_rate: stochastic depth of the last block (linear from 0); the released recipes use 0.1
            (tiny) and 0.15 (small).
        pretrained: ``False``; or the path of an official checkpoint you downloaded, loaded with
            :func:`bralib.models.load_official_weights`. ``True`` raises: bralib cannot fetch weights.
        overrides: architecture fields of :class:`BiFormerConfig` (``depths``, ``topks``, ``n_win``, ...)
            and the model options ``in_chans``, ``auto_pad``, ``backend``, ``features_only``.

    Example::

        model = create_model("biformer_tiny", features_only=True, auto_pad=True)
        maps = model(torch.randn(1, 3, 230, 310))   # 4 NCHW maps at strides 4, 8, 16, 32
    """
    if name in ISOTROPIC_CONFIGS:  # the attention-ablation family (chapter 10)
        if pretrained:
            raise ValueError(f"pretrained: no official weights exist for {name!r}; load a state dict of your own")
        return create_isotropic(name, num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    unknown = sorted(set(overrides) - set(CONFIG_KEYS) - set(MODEL_KEYS))
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unknown option(s) {unknown}; allowed: num_classes, drop_path_rate, "
            f"pretrained, the model options {list(MODEL_KEYS)} and the architecture fields {list(CONFIG_KEYS)}"
        )
    arch = {key: _as_tuple(value) for key, value in overrides.items() if key in CONFIG_KEYS}
    config = dataclasses.replace(MODEL_CONFIGS[name], **arch) if arch else MODEL_CONFIGS[name]
    options = {key: value for key, value in overrides.items() if key in MODEL_KEYS}
    if pretrained is True:
        raise ValueError(_cannot_fetch(name))
    model = BiFormer(config, num_classes=num_classes, drop_path_rate=drop_path_rate, **options)
    if pretrained:
        from bralib.models.weights import load_official_weights

        load_official_weights(model, pretrained)
    return model


def _as_tuple(value: Any) -> Any:
    """Lists from a config file or the command line become the tuples the (frozen, hashable) config holds."""
    return tuple(value) if isinstance(value, list) else value


def _cannot_fetch(name: str) -> str:
    if name not in OFFICIAL_CHECKPOINTS:
        return f"pretrained=True: no official weights exist for {name!r}; released: {', '.join(OFFICIAL_CHECKPOINTS)}"
    title, file = OFFICIAL_CHECKPOINTS[name]
    return (
        f"pretrained=True: bralib does not download weights (the official checkpoints live on cloud drives "
        f"whose links change). Download the {title} ImageNet-1K checkpoint via its 'model' link in the README of "
        f"github.com/rayleizhu/BiFormer (the official code saves it as {file}), then pass the file: "
        f"create_model({name!r}, pretrained='path/to/{file}'), or "
        f"bralib.models.load_official_weights(model, 'path/to/{file}')."
    )
