"""AdamW with the usual exemptions from weight decay, and a per-step linear warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float, no_decay_keywords: Iterable[str] = ("pos_conv", "pos_embed")
) -> list[dict]:
    """Two groups: weights that decay, and those that do not.

    No decay for 1-d parameters (norm scales and shifts, biases: shrinking them toward zero only
    fights the normalisation), for names containing a keyword (the depthwise position convs, whose
    weights *are* the positional encoding), and for names the model lists in ``no_weight_decay()``
    (the timm convention).
    """
    keywords = tuple(no_decay_keywords)
    listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in listed or any(key in name for key in keywords):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999), no_decay_keywords=("pos_conv", "pos_embed")
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay, no_decay_keywords), lr=lr, betas=tuple(betas))


def warmup_cosine(
    step: int, *, total_steps: int, warmup_steps: int, lr: float, min_lr: float, warmup_lr: float
) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear from ``warmup_lr`` to ``lr`` over ``warmup_steps`` steps, then half a cosine from ``lr``
    down to ``min_lr`` at the last step. Per step, not per epoch: with few long epochs a per-epoch
    staircase would hold the rate far from the curve.
    """
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    decay_steps = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimizer's learning rate from :func:`warmup_cosine`; its state is the step it is at."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, lr: float,
                 min_lr: float, warmup_lr: float) -> None:  # fmt: skip
        self.optimizer = optimizer
        self.kwargs = dict(
            total_steps=total_steps, warmup_steps=warmup_steps, lr=lr, min_lr=min_lr, warmup_lr=warmup_lr
        )
        self.step_count = 0
        self._apply()

    def lr(self, step: int | None = None) -> float:
        return warmup_cosine(self.step_count if step is None else step, **self.kwargs)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()

    def step(self) -> None:
        """Call after ``optimizer.step()``: moves to the next step's rate."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, **self.kwargs}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
