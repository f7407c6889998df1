"""Checkpoints that resume exactly: written atomically, read with ``weights_only=True``.

A checkpoint holds everything the next step depends on: model, EMA, optimizer, schedule, grad
scaler, the step, the RNG states of python / numpy / torch (and CUDA) of every rank, and the data
position (epoch and samples already read). It is written to ``<name>.tmp`` and renamed over the
old file with ``os.replace``: a process killed mid-write leaves the previous checkpoint intact.

Only plain types and tensors go in (numpy state as lists), so ``torch.load(weights_only=True)``
reads it without allowing arbitrary pickled code. Reading and writing go through :mod:`bralib.io`,
which also verifies every entry's CRC-32 (and a ``.sha256`` record where one exists) before loading.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bralib.errors import CheckpointError
from bralib.io import load_torch_file, save_torch_file

FORMAT = "bralib.train.checkpoint/1"
# What each use of a checkpoint needs in it. Exported weights (export_weights) have the first set only.
INFERENCE_KEYS = ("config", "num_classes", "model", "step")
RESUME_KEYS = (*INFERENCE_KEYS, "ema", "optimizer", "scheduler", "scaler", "rng")


def rng_state() -> dict[str, Any]:
    """This process's random-number generator states, as weights-only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": np_state[1].tolist(), "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np.array(np_state["key"], dtype=np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any], *, sha256: bool = False) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, flush to disk, rename).

    On a full disk the temporary file is removed and :class:`bralib.errors.WriteError` names the file; the
    previous checkpoint is unchanged. ``sha256`` also stores ``<path>.sha256``, checked on every load.
    """
    save_torch_file(path, {"format": FORMAT, **payload}, sha256=sha256, what="checkpoint")


def load_checkpoint(path: str | Path, *, purpose: str = "any", what: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU, weights only, after checking it is whole.

    ``purpose`` says which entries must be there: "inference" (weights and config: a training checkpoint or
    exported weights), "resume" (the whole training state: a training checkpoint only) or "any" (checks the
    format only). Every problem is a
    :class:`~bralib.errors.CheckpointError` naming the file and what was expected.
    """
    if purpose not in ("any", "inference", "resume"):
        raise ValueError(f"purpose must be 'any', 'inference' or 'resume', got {purpose!r}")
    payload = load_torch_file(path, what=what)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format", "no format entry") if isinstance(payload, dict) else type(payload).__name__
        hint = ""
        if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
            hint = " (it looks like a bare state dict: load it with model.load_state_dict or load_official_weights)"
        raise CheckpointError(
            f"{what} {str(path)!r} is not a bralib training checkpoint (format {FORMAT!r}); found {found!r}{hint}"
        )
    if purpose == "resume" and "optimizer" not in payload and "weights" in payload:
        raise CheckpointError(
            f"{what} {str(path)!r} holds exported weights (one set of weights, no optimizer or RNG state), which "
            "cannot resume a run; start a new run from them with --init, or resume from the run's checkpoint.pt"
        )
    needed = {"any": (), "inference": INFERENCE_KEYS, "resume": RESUME_KEYS}[purpose]
    missing = [key for key in needed if key not in payload]
    if missing:
        raise CheckpointError(
            f"{what} {str(path)!r} lacks {missing}: a checkpoint for {purpose} needs the entries {list(needed)}"
        )
    if purpose != "any" and not (isinstance(payload["config"], dict) and isinstance(payload["model"], dict)):
        raise CheckpointError(f"{what} {str(path)!r}: its 'config' and 'model' entries must be dicts")
    return payload


def state_differences(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What stops ``state`` from loading into ``model``: missing and unexpected keys, shape mismatches."""
    own = model.state_dict()
    lines = [f"missing in checkpoint: {k} {tuple(own[k].shape)}" for k in own if k not in state]
    lines += [f"not in this model: {k} {tuple(v.shape)}" for k, v in state.items() if k not in own]
    lines += [
        f"shape of {k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    return lines


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` with an error that lists what differs (at most 12 lines)."""
    problems = state_differences(model, state)
    if problems:
        shown = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise CheckpointError(f"{source} does not fit this model ({len(problems)} differences):\n  {shown}")
    model.load_state_dict(state)


def chosen_weights(payload: dict[str, Any], *, ema: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, whether it is the EMA's) of a loaded checkpoint: the EMA weights when it has them and
    ``ema`` is True, else the model's."""
    use_ema = ema and payload.get("ema") is not None
    if use_ema and not (isinstance(payload["ema"], dict) and isinstance(payload["ema"].get("module"), dict)):
        raise CheckpointError("the checkpoint's 'ema' entry must be a dict with a 'module' state dict")
    return (payload["ema"]["module"] if use_ema else payload["model"]), use_ema


def export_weights(
    source: str | Path, target: str | Path, *, ema: bool = True, dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Write a small, inference-only copy of a training checkpoint: config, one set of weights, metrics.

    Drops the optimizer state, RNG states and the second set of weights (about 3/4 of the file);
    keeps the EMA weights when there are any and ``ema`` is True. ``dtype=torch.float16`` halves the
    file again (floating-point tensors only; ``load_state_dict`` casts them back to the model's
    dtype). The result loads with ``bralib.train.load_trained_model`` but cannot resume training.
    Its SHA-256 goes to ``<target>.sha256``, checked whenever the file is loaded.
    """
    payload = load_checkpoint(source, purpose="inference")
    state, use_ema = chosen_weights(payload, ema=ema)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    slim = {
        "config": payload["config"],
        "num_classes": payload["num_classes"],
        "model": state,
        "ema": None,
        "weights": "ema" if use_ema else "model",
        "step": payload["step"],
        "metrics": payload.get("metrics", {}),
    }
    save_checkpoint(target, slim, sha256=True)
    return slim
