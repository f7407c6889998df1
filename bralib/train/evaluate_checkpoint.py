"""Evaluate a training checkpoint in one process: the model and the data as the run had them, unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bralib.data import build_datasets, build_loader
from bralib.train.checkpoint import load_checkpoint, load_model_state
from bralib.train.config import TrainConfig
from bralib.train.distributed import resolve_device
from bralib.train.evaluate import evaluate
from bralib.train.loop import amp_dtype_for
from bralib.train.model import build_model


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    val_size: int | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    amp: bool | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 / loss of the checkpoint's weights and of its EMA weights on the validation split."""
    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"], source=f"config stored in {path}")
    data = config.data if data is None else data
    spec = build_datasets(
        data, image_size=config.image_size or (64 if data == "digits-pairs" else 224), train_size=1,
        val_size=config.val_size if val_size is None else val_size, seed=config.seed, relation=config.relation,
        distractors=config.distractors, strokes=config.strokes,
    )  # fmt: skip
    if spec.num_classes != payload["num_classes"]:
        raise ValueError(
            f"data {data!r} has {spec.num_classes} classes but the checkpoint's model was trained for "
            f"{payload['num_classes']} (data {config.data!r}, relation {config.relation!r})"
        )
    chosen = resolve_device(device)
    amp_dtype = amp_dtype_for(TrainConfig.from_dict({**payload["config"], "amp": config.amp if amp is None else amp}),
                              chosen)  # fmt: skip
    loader = build_loader(spec.val, batch_size=batch_size or config.batch_size, train=False, seed=config.seed,
                          num_workers=num_workers)  # fmt: skip
    model = build_model(config, payload["num_classes"])
    result: dict[str, Any] = {"checkpoint": str(path), "step": payload["step"], "data": data}
    load_model_state(model, payload["model"], source=f"checkpoint {str(path)!r}")
    result.update(evaluate(model.to(chosen), loader, device=chosen, amp_dtype=amp_dtype))
    if payload.get("ema") is not None:
        load_model_state(model, payload["ema"]["module"], source=f"EMA weights of {str(path)!r}")
        ema = evaluate(model, loader, device=chosen, amp_dtype=amp_dtype)
        result.update({f"ema_{k}": v for k, v in ema.items() if k != "images"})
    return result
