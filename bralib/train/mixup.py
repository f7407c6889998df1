"""Label smoothing, mixup and cutmix in torch, and the cross-entropy over the soft targets they make.

One path for every setting: labels become smoothed one-hot vectors, a mixed batch mixes them with the
same weight as the images, and the loss is the cross-entropy against those probabilities. With
mixup and cutmix off it equals ``F.cross_entropy(logits, labels, label_smoothing=s)``.

The batch is mixed with itself reversed (image i with image B-1-i), as in timm: no second batch.
Random draws come from torch's global generator, whose state the checkpoint keeps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) int -> (B, num_classes) float: 1 - smoothing + smoothing/C on the label, smoothing/C elsewhere."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c targets[c] * log softmax(logits)[c]; computed in float32."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a random box of area about (1 - lam) * H * W, clipped to the image."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, ()))
    cx = int(torch.randint(0, width, ()))
    return (
        max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
        max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width),
    )  # fmt: skip


def sample_beta(alpha: float) -> float:
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


class Mixup:
    """``(images (B, C, H, W), labels (B,)) -> (mixed images, soft targets (B, num_classes))``.

    Args:
        num_classes: classes of the labels.
        mixup_alpha: Beta parameter of mixup's weight (0: no mixup).
        cutmix_alpha: Beta parameter of cutmix's area (0: no cutmix).
        prob: probability that a batch is mixed at all.
        switch_prob: with both on, probability of cutmix rather than mixup.
        label_smoothing: smoothing of the one-hot targets before mixing.
    """

    def __init__(self, num_classes: int, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0) -> None:  # fmt: skip
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        if not self.active or float(torch.rand(())) >= self.prob:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or float(torch.rand(())) < self.switch_prob)
        if use_cutmix:
            lam = sample_beta(self.cutmix_alpha)
            top, bottom, left, right = cutmix_box(images.shape[-2], images.shape[-1], lam)
            images = images.clone()
            images[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (images.shape[-2] * images.shape[-1])  # the true area
        else:
            lam = sample_beta(self.mixup_alpha)
            images = images * lam + images.flip(0) * (1.0 - lam)
        return images, targets * lam + targets.flip(0) * (1.0 - lam)
