"""Top-1 / top-5 accuracy and loss over a loader (summed across processes), and of a checkpoint in one process.

Imports flow one way: the training loop imports this module, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bralib.errors import CheckpointError, UsageError
from bralib.train.config import TrainConfig
from bralib.train.distributed import all_reduce_sum


def amp_dtype_for(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """float16 on CUDA (with a GradScaler: its gradients underflow otherwise), bfloat16 on CPU, None without AMP."""
    if not config.amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, *, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Accuracy (%) and mean cross-entropy of ``model`` on every image of ``loader``.

    Under torchrun each rank reads its own share (no padding, no duplicates) and the sums are
    all-reduced, so the numbers equal a single-process evaluation. Top-5 is top-min(5, classes).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)  # (B, classes)
        k = min(5, logits.shape[-1])
        hits = logits.topk(k, dim=-1).indices == labels[:, None]  # (B, k)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        sums += torch.stack([loss.double(), hits[:, 0].sum().double(), hits.sum().double(),
                             torch.tensor(labels.shape[0], dtype=torch.float64, device=device)])  # fmt: skip
    all_reduce_sum(sums)
    model.train(was_training)
    count = max(sums[3].item(), 1.0)
    return {
        "loss": sums[0].item() / count,
        "top1": 100.0 * sums[1].item() / count,
        "top5": 100.0 * sums[2].item() / count,
        "images": int(sums[3].item()),
    }


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    val_size: int | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    amp: bool | None = None,
    factory: Callable[..., nn.Module] | str | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 / loss of the checkpoint's weights and of its EMA weights on the validation split.

    ``val_size`` and ``batch_size`` default (None) to the training run's; when given they must be >= 1.
    ``factory`` builds a model of your own (see :func:`bralib.train.model.load_trained_model`).
    """
    from bralib.data import build_datasets, build_loader
    from bralib.train.checkpoint import load_checkpoint, load_model_state
    from bralib.train.distributed import resolve_device
    from bralib.train.model import build_model, stored_config

    for name, value, least in (
        ("val_size", val_size, 1),
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            default = " (leave it out for the training run's)" if name != "num_workers" else ""
            raise UsageError(f"{name} must be an integer >= {least}{default}, got {value!r}")
    if amp is not None and not isinstance(amp, bool):
        raise UsageError(f"amp must be True, False or None (the training run's), got {amp!r}")
    payload = load_checkpoint(path, purpose="inference")
    config = stored_config(payload, path, factory)
    data = config.data if data is None else data
    spec = build_datasets(
        data, image_size=config.image_size or (64 if data == "digits-pairs" else 224), train_size=1,
        val_size=config.val_size if val_size is None else val_size, seed=config.seed, relation=config.relation,
        distractors=config.distractors, strokes=config.strokes,
    )  # fmt: skip
    if spec.num_classes != payload["num_classes"]:
        raise UsageError(
            f"data {data!r} has {spec.num_classes} classes but the checkpoint's model was trained for "
            f"{payload['num_classes']} (data {config.data!r}, relation {config.relation!r})"
        )
    chosen = resolve_device(device)
    amp_dtype = amp_dtype_for(TrainConfig.from_dict({**payload["config"], "amp": config.amp if amp is None else amp}),
                              chosen)  # fmt: skip
    loader = build_loader(spec.val, batch_size=batch_size or config.batch_size, train=False, seed=config.seed,
                          num_workers=num_workers)  # fmt: skip
    model = build_model(config, payload["num_classes"], factory=factory)
    result: dict[str, Any] = {"checkpoint": str(path), "step": payload["step"], "data": data}
    load_model_state(model, payload["model"], source=f"checkpoint {str(path)!r}")
    result.update(evaluate(model.to(chosen), loader, device=chosen, amp_dtype=amp_dtype))
    if payload.get("ema") is not None:
        if not isinstance(payload["ema"], dict) or not isinstance(payload["ema"].get("module"), dict):
            raise CheckpointError(
                f"checkpoint {str(path)!r}: its 'ema' entry must be a dict with a 'module' state dict"
            )
        load_model_state(model, payload["ema"]["module"], source=f"EMA weights of {str(path)!r}")
        ema = evaluate(model, loader, device=chosen, amp_dtype=amp_dtype)
        result.update({f"ema_{k}": v for k, v in ema.items() if k != "images"})
    return result
