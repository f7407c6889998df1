"""bralib models as safetensors files: weights that load without unpickling, a SHA-256 beside them.

A ``.safetensors`` file holds raw tensors and a JSON header; no code can hide in it. bralib writes there, as
string metadata, what rebuilds the model without its Python code: the architecture (every field of
:class:`~bralib.models.BiFormerConfig`), ``num_classes``, ``in_chans``, the class names when known and the
preprocessing its inputs need (:class:`Preprocess`). Beside it goes ``<file>.sha256`` (``sha256sum`` format,
:mod:`bralib.io`); :func:`read_safetensors` checks it when it is there, so a damaged or edited file fails with
a message naming it.

    save_safetensors(model, "tiny.safetensors", class_names=names)   # + tiny.safetensors.sha256
    model, info = load_safetensors("tiny.safetensors")               # rebuilt, eval mode; info.class_names
    load_safetensors_into(other_model, "tiny.safetensors")           # strict: every key and shape must fit
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bralib.errors import CheckpointError
from bralib.export.deps import require
from bralib.io import verify_sha256, write_sha256
from bralib.models.biformer import CONFIG_KEYS, BiFormer, BiFormerConfig

FORMAT = "bralib.safetensors/1"


@dataclass(frozen=True)
class Preprocess:
    """How an image (3, H, W) in [0, 1] becomes a model input.

    ``crop_pct`` None: resize to ``size`` x ``size``; else resize the shorter side to ``size / crop_pct`` and
    take the central ``size`` crop (ImageNet evaluation: 256 -> 224). Then ``(x - mean) / std`` per channel.
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float | None = 0.875
    interpolation: str = "bicubic"

    @classmethod
    def of_model(cls, model: BiFormer) -> Preprocess:
        """The released ImageNet evaluation, from ``model.pretrained_cfg``."""
        cfg = model.pretrained_cfg
        return cls(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"], cfg["interpolation"])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float in [0, 1] -> (3, size, size) normalised."""
        from bralib.data import transforms as T

        if self.crop_pct is None:
            image = T.resize(image, (self.size, self.size), mode=self.interpolation)
        else:
            image = T.EvalResizeCrop(self.size, self.crop_pct, self.interpolation)(image)
        return T.Normalize(self.mean, self.std)(image, None)


@dataclass
class WeightsInfo:
    """What a bralib safetensors file says about its model besides the weights."""

    architecture: str | None
    num_classes: int
    class_names: list[str] | None
    preprocess: Preprocess | None
    source: str


def describe(model: BiFormer) -> dict[str, Any]:
    """The JSON-able description that rebuilds ``model``'s architecture (:func:`build_from_description`)."""
    config = {key: getattr(model.config, key) for key in CONFIG_KEYS}
    return {"config": config, "num_classes": model.num_classes, "in_chans": model.in_chans,
            "auto_pad": model.auto_pad, "architecture": model.pretrained_cfg["architecture"]}  # fmt: skip


def build_from_description(description: dict[str, Any]) -> BiFormer:
    """A freshly initialised BiFormer of the architecture :func:`describe` wrote."""
    fields = {key: tuple(v) if isinstance(v, list) else v for key, v in description["config"].items()}
    config = BiFormerConfig(**fields)
    return BiFormer(config, num_classes=description["num_classes"], in_chans=description["in_chans"],
                    auto_pad=description.get("auto_pad", False))  # fmt: skip


def save_safetensors(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    preprocess: Preprocess | None = None,
    source: str = "",
) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and its SHA-256 to ``<path>.sha256``.

    For a BiFormer the file also describes the architecture (so :func:`load_safetensors` rebuilds it) and its
    ``preprocess`` (default: the released ImageNet evaluation); ``class_names`` must have ``num_classes``
    entries. Other modules store their weights only (load them with :func:`load_safetensors_into`).
    """
    st = require("safetensors.torch", "writing safetensors")
    metadata = {"format": FORMAT, "source": source}
    if isinstance(model, BiFormer):
        if class_names is not None and len(class_names) != model.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {model.num_classes} classes")
        preprocess = Preprocess.of_model(model) if preprocess is None else preprocess
        metadata["model"] = json.dumps(describe(model))
        metadata["preprocess"] = json.dumps(dataclasses.asdict(preprocess))
    if class_names is not None:
        metadata["class_names"] = json.dumps([str(name) for name in class_names])
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    st.save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    write_sha256(path)
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a safetensors file, after checking ``<path>.sha256`` when it exists."""
    require("safetensors", "reading safetensors")
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    verify_sha256(path, what="weights file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"weights file {str(path)!r} is not a readable safetensors file: {err}") from err
    return state, metadata


def load_safetensors_into(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the weights of ``path`` into ``model``, strictly (every key and shape must match); returns it."""
    from bralib.train.checkpoint import load_model_state

    state, _ = read_safetensors(path)
    load_model_state(model, state, source=f"weights file {str(path)!r}")
    return model


def load_safetensors(path: str | os.PathLike) -> tuple[BiFormer, WeightsInfo]:
    """Rebuild the BiFormer a bralib safetensors file describes, with its weights, in eval mode."""
    state, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT or "model" not in metadata:
        raise CheckpointError(
            f"weights file {str(path)!r} does not describe a bralib model (metadata format {metadata.get('format')!r}, "
            f"expected {FORMAT!r}); build the model yourself and use load_safetensors_into(model, path)"
        )
    try:
        description = json.loads(metadata["model"])
        model = build_from_description(description)
    except (ValueError, TypeError, KeyError) as err:  # a header from a newer bralib, or edited by hand
        raise CheckpointError(f"weights file {str(path)!r} describes a model this bralib cannot build: {err}") from err
    from bralib.train.checkpoint import load_model_state

    load_model_state(model, state, source=f"weights file {str(path)!r}")
    preprocess = metadata.get("preprocess")
    info = WeightsInfo(
        architecture=description.get("architecture"),
        num_classes=description["num_classes"],
        class_names=json.loads(metadata["class_names"]) if "class_names" in metadata else None,
        preprocess=Preprocess(**_tuples(json.loads(preprocess))) if preprocess else None,
        source=metadata.get("source", ""),
    )
    return model.eval(), info


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: tuple(v) if isinstance(v, list) else v for key, v in fields.items()}
