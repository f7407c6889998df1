"""Solutions for chapter 7, "Training BiFormer"."""

import math

import torch


def lr_at_step(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float, warmup_lr: float) -> float:
    """Linear warm-up from warmup_lr to lr, then half a cosine from lr to min_lr at the last step."""
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - 1 - warmup_steps, 1), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def mix_targets(labels: torch.Tensor, num_classes: int, smoothing: float, lam: float) -> torch.Tensor:
    """Smoothed one-hot rows, each mixed with the row of the image it was mixed with (the reversed batch)."""
    targets = torch.full((labels.shape[0], num_classes), smoothing / num_classes)
    targets[torch.arange(labels.shape[0]), labels] += 1 - smoothing
    return lam * targets + (1 - lam) * targets.flip(0)


def ema_step(average: torch.Tensor, weights: torch.Tensor, decay: float, updates: int) -> torch.Tensor:
    """One EMA update with the warm-up rule min(decay, (1 + n) / (10 + n))."""
    d = min(decay, (1 + updates) / (10 + updates))
    return d * average + (1 - d) * weights


def ema_half_life(decay: float) -> int:
    """n = ceil(log 0.5 / log decay), corrected by one step if floating point lands on the wrong side.

    0.99996 gives 17,329 updates: about 13.9 epochs at 1251 updates per epoch. The EMA model averages over the
    last few tens of epochs, so early in training it lags far behind the weights (and the warm-up rule
    min(decay, (1 + n) / (10 + n)) keeps the first updates from being swamped by the random initial weights);
    it only pays off late, when the weights move slowly and averaging smooths the noise of the last epochs.
    """
    n = max(1, math.ceil(math.log(0.5) / math.log(decay)))
    while decay ** (n - 1) <= 0.5 and n > 1:
        n -= 1
    while decay**n > 0.5:
        n += 1
    return n
