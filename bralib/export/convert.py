"""``bralib convert``'s work: official ``.pth`` checkpoints and bralib training checkpoints to safetensors.

An official checkpoint goes through :func:`bralib.models.load_official_weights`, strictly (a missing,
unexpected or misshapen key fails, listing them); a training checkpoint through
:func:`bralib.train.load_trained_model` (its EMA weights when it has them), keeping what its training
config says about the classes and the preprocessing.
"""

from __future__ import annotations

import os
from pathlib import Path

from bralib.export.safetensors_io import Preprocess, save_safetensors
from bralib.train.config import TrainConfig


def convert_official(
    source: str | os.PathLike,
    target: str | os.PathLike,
    model_name: str,
    *,
    num_classes: int = 1000,
    class_names: list[str] | None = None,
) -> dict:
    """Load the official checkpoint ``source`` into ``create_model(model_name)`` and write it as safetensors."""
    import bralib
    from bralib.models import load_official_weights

    model = bralib.create_model(model_name, num_classes=num_classes)
    load_official_weights(model, source)
    save_safetensors(
        model.eval(), target, class_names=class_names, source=f"official {model_name}: {Path(source).name}"
    )
    return {"model": model_name, "num_classes": num_classes, "tensors": len(model.state_dict()), "out": str(target)}


def convert_trained(source: str | os.PathLike, target: str | os.PathLike, *, ema: bool = True) -> dict:
    """Write the weights of a bralib training checkpoint (EMA ones by default) as safetensors."""
    from bralib.models.biformer import BiFormer
    from bralib.train import load_trained_model

    model, config, info = load_trained_model(source, ema=ema)
    if not isinstance(model, BiFormer):
        raise ValueError(f"{str(source)!r} holds a {type(model).__name__}; bralib convert writes BiFormer models")
    names = trained_class_names(config, info)
    weights = "EMA" if info["ema"] else "model"
    save_safetensors(model, target, class_names=names, preprocess=trained_preprocess(config),
                     source=f"bralib train: {Path(source).name}, step {info['step']}, {weights} weights")  # fmt: skip
    return {"model": config.model, "num_classes": info["num_classes"], "tensors": len(model.state_dict()),
            "out": str(target)}  # fmt: skip


def trained_class_names(config: TrainConfig, info: dict) -> list[str] | None:
    """The class names of a training run: stored in the checkpoint, or what its dataset names its labels.

    digits-pairs labels are digits (``"same"``: "different", "same"); an image folder's classes are its
    sorted sub-folders of ``train/``, read when that folder is still there.
    """
    if info.get("class_names"):
        return list(info["class_names"])
    if config.data == "digits-pairs":
        return ["different", "same"] if config.relation == "same" else [str(d) for d in range(10)]
    from bralib.data.folder import find_classes

    try:
        names = find_classes(Path(config.data) / "train")
    except OSError:  # the training data is not on this machine (any more)
        return None
    return names if len(names) == info["num_classes"] else None


def trained_preprocess(config: TrainConfig) -> Preprocess:
    """The evaluation transform of a training run: digits-pairs' own statistics at 64x64, else ImageNet's."""
    from bralib.data.loader import DIGITS_MEAN, DIGITS_STD
    from bralib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    if config.data == "digits-pairs":
        return Preprocess(config.image_size or 64, DIGITS_MEAN, DIGITS_STD, crop_pct=None, interpolation="bilinear")
    return Preprocess(config.image_size or 224, IMAGENET_MEAN, IMAGENET_STD, crop_pct=0.875, interpolation="bicubic")
