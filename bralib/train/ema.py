"""An exponential moving average of the model's weights, evaluated alongside the model itself."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step; buffers are copied.

    With ``warmup`` the decay starts small, ``min(decay, (1 + n) / (10 + n))`` after n updates
    (TensorFlow's ExponentialMovingAverage rule), so a short run's average is not stuck at the
    random initialisation: with decay 0.99996 (the recipe) the average needs ~25,000 steps to forget it.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.current_decay()
        ema_floats, model_floats = [], []
        for ema_value, value in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_value.dtype.is_floating_point:
                ema_floats.append(ema_value)
                model_floats.append(value.detach())
            else:
                ema_value.copy_(value)  # integer buffers, e.g. BatchNorm's num_batches_tracked
        torch._foreach_lerp_(ema_floats, model_floats, 1.0 - decay)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
