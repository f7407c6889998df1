"""Exercises for chapter 7, "Training BiFormer".

Tags: difficulty, and kind (*transcription*, *design* or *experiment*, as in chapter 0). Fill in each
function, then check it from the chapter's notebook or a terminal:

    bralib exercise check --chapter 7
"""

import torch


def lr_at_step(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float, warmup_lr: float) -> float:
    """[easy, transcription] The learning rate of optimizer step ``step`` (0-based) under linear warm-up + cosine decay.

    For step < warmup_steps: a straight line from ``warmup_lr`` (at step 0) towards ``lr`` (reached at
    step ``warmup_steps``). After that: half a cosine from ``lr`` (at step ``warmup_steps``) down to
    ``min_lr`` at the last step, ``total_steps - 1``.
    """
    raise NotImplementedError("fill in lr_at_step")


def mix_targets(labels: torch.Tensor, num_classes: int, smoothing: float, lam: float) -> torch.Tensor:
    """[easy, design] Soft targets (B, num_classes) for a batch mixed with its own reverse using weight ``lam``.

    1. Smooth the one-hot labels: every class gets ``smoothing / num_classes``, and the true class gets
       ``1 - smoothing`` on top of that.
    2. Mix: row i becomes ``lam * row[i] + (1 - lam) * row[B - 1 - i]`` (image i was mixed with image B-1-i).
    """
    raise NotImplementedError("fill in mix_targets")


def ema_step(average: torch.Tensor, weights: torch.Tensor, decay: float, updates: int) -> torch.Tensor:
    """[easy, transcription] The moving average after update number ``updates`` (1 for the first update), with warm-up.

    The decay used is ``min(decay, (1 + updates) / (10 + updates))``; return
    ``d * average + (1 - d) * weights`` as a new tensor (leave the inputs unchanged).
    """
    raise NotImplementedError("fill in ema_step")


def ema_half_life(decay: float) -> int:
    """[easy, design] After how many updates does a weight count half as much in the moving average?

    Each EMA update multiplies the share of everything already in the average by ``decay`` (0 < decay < 1).
    Return the smallest number n of further updates after which a weight's share has fallen to at most half
    of what it was: decay**n <= 0.5. Then: the released recipe uses decay 0.99996; with a batch of 1024 on
    ImageNet-1K (1251 updates per epoch), how many epochs is that, and what does it say about evaluating the
    EMA model early in a 300-epoch run?
    """
    raise NotImplementedError("fill in ema_half_life")
