"""Training: one loop for a CPU, one GPU, or many processes under torchrun (see :func:`train`).

Small files, one idea each: ``config`` (the dataclass, TOML and flags), ``optim`` (AdamW groups,
warm-up + cosine), ``mixup`` (label smoothing, mixup, cutmix, soft-target loss), ``ema``,
``checkpoint`` (atomic, exact resume), ``distributed`` (torchrun), ``evaluation`` (top-1/top-5 of a
loader or a checkpoint), ``model`` (build, ``--init``, reload), ``runlock`` (one run per output
directory), ``loop`` (the run itself), ``cli`` (``bralib train``) and ``eval_cli`` (``bralib eval``).
Heavy modules load on first use, so
``import bralib.train`` stays light. (No module is named like a function it exports: a submodule
imported by another would otherwise shadow the function of the same name on this package.)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "bralib.train.config",
    "train": "bralib.train.loop",
    "Trainer": "bralib.train.loop",
    "build_model": "bralib.train.model",
    "load_trained_model": "bralib.train.model",
    "load_weights": "bralib.train.model",
    "set_routing": "bralib.train.model",
    "evaluate": "bralib.train.evaluation",
    "evaluate_checkpoint": "bralib.train.evaluation",
    "load_checkpoint": "bralib.train.checkpoint",
    "export_weights": "bralib.train.checkpoint",
    "ModelEma": "bralib.train.ema",
    "Mixup": "bralib.train.mixup",
    "soft_target_cross_entropy": "bralib.train.mixup",
    "param_groups": "bralib.train.optim",
    "warmup_cosine": "bralib.train.optim",
    "read_log": "bralib.train.runlog",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bralib.train' has no attribute {name!r}; available: {__all__}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
