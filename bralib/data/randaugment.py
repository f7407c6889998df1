"""RandAugment (Cubuk et al. 2020) in torch: a documented subset of the operations DeiT/BiFormer train with.

Each image gets ``num_ops`` operations drawn uniformly from :data:`OPS`, each with probability 0.5
(timm's ``rand-m9-mstd0.5-inc1``, the recipe's policy), at magnitude ``m`` on a 0-10 scale, jittered
by a normal of std ``magnitude_std``. "Increasing" variants: a larger magnitude is always a stronger
change, and signed operations (rotate, shear, translate, enhance) flip their sign with probability 0.5.

Kept (12): identity, auto_contrast, equalize, rotate (<= 30 deg), shear_x / shear_y (<= 0.3),
translate_x / translate_y (<= 45 % of the side), posterize (8 -> 4 bits), solarize (threshold 1 -> 0),
color, contrast, brightness (factor 1 +- 0.9).
Left out of timm's list: invert, solarize_add and sharpness (rarely picked, little effect in DeiT's
ablations; sharpness needs a 3x3 smoothing kernel with PIL's exact border rule).
Geometric operations fill uncovered pixels with grey 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FILL = 0.5


def _rand(generator: torch.Generator) -> float:
    return torch.rand((), generator=generator).item()


def _signed(value: float, generator: torch.Generator) -> float:
    return -value if _rand(generator) < 0.5 else value


def _gray(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (1, H, W) luminance (ITU-R 601, as PIL's "L" mode); a 1-channel image is its own grey."""
    if image.shape[0] != 3:
        return image.mean(0, keepdim=True)
    weights = image.new_tensor([0.299, 0.587, 0.114])[:, None, None]
    return (image * weights).sum(0, keepdim=True)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance rule: factor 0 gives ``other``, 1 the image, > 1 extrapolates away from ``other``."""
    return (other + factor * (image - other)).clamp(0.0, 1.0)


def _affine(image: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    """Sample ``image`` at ``matrix @ (x, y, 1)`` in normalised [-1, 1] coordinates; grey where nothing lands."""
    theta = image.new_tensor(matrix)[None]  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    with_mask = torch.cat([image, torch.ones_like(image[:1])])[None]  # a channel of ones marks covered pixels
    out = F.grid_sample(with_mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    covered = out[-1:]
    return out[:-1] + (1 - covered) * FILL


def identity(image, level, generator):
    return image


def auto_contrast(image, level, generator):
    low = image.amin(dim=(1, 2), keepdim=True)
    high = image.amax(dim=(1, 2), keepdim=True)
    scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-12), torch.ones_like(high))
    return torch.where(high > low, (image - low) * scale, image)


def equalize(image, level, generator):
    """Histogram equalisation per channel over 256 levels (PIL's ImageOps.equalize)."""
    levels = (image * 255).round().long().clamp(0, 255)  # (C, H, W)
    out = []
    for channel in levels:
        hist = torch.bincount(channel.reshape(-1), minlength=256)
        step = (hist.sum() - hist[hist.nonzero()[-1]]) // 255 if hist.nonzero().numel() else 0
        if int(step) == 0:
            out.append(channel.float() / 255)
            continue
        lut = (torch.cumsum(hist, 0) + step // 2) // step
        lut = torch.cat([lut.new_zeros(1), lut[:-1]]).clamp(0, 255)
        out.append(lut[channel].float() / 255)
    return torch.stack(out)


def rotate(image, level, generator):
    angle = math.radians(_signed(level * 30.0, generator))
    height, width = image.shape[-2:]
    aspect = width / height  # rotate in pixel space, not in the squashed [-1, 1] square
    cos, sin = math.cos(angle), math.sin(angle)
    return _affine(image, [[cos, -sin / aspect, 0.0], [sin * aspect, cos, 0.0]])


def shear_x(image, level, generator):
    shear = _signed(level * 0.3, generator)
    height, width = image.shape[-2:]
    return _affine(image, [[1.0, shear * height / width, 0.0], [0.0, 1.0, 0.0]])


def shear_y(image, level, generator):
    shear = _signed(level * 0.3, generator)
    height, width = image.shape[-2:]
    return _affine(image, [[1.0, 0.0, 0.0], [shear * width / height, 1.0, 0.0]])


def translate_x(image, level, generator):
    return _affine(image, [[1.0, 0.0, 2 * _signed(level * 0.45, generator)], [0.0, 1.0, 0.0]])


def translate_y(image, level, generator):
    return _affine(image, [[1.0, 0.0, 0.0], [0.0, 1.0, 2 * _signed(level * 0.45, generator)]])


def posterize(image, level, generator):
    bits = 8 - int(level * 4)  # 8 bits (no change) down to 4
    shift = 8 - bits
    levels = (image * 255).round().to(torch.uint8)
    return ((levels >> shift) << shift).float() / 255


def solarize(image, level, generator):
    threshold = 1.0 - level  # "increasing": magnitude 0 changes nothing, 10 inverts every pixel
    return torch.where(image >= threshold, 1.0 - image, image)


def color(image, level, generator):
    return _blend(image, _gray(image).expand_as(image), 1.0 + _signed(level * 0.9, generator))


def contrast(image, level, generator):
    mean = _gray(image).mean()
    return _blend(image, torch.full_like(image, mean.item()), 1.0 + _signed(level * 0.9, generator))


def brightness(image, level, generator):
    return _blend(image, torch.zeros_like(image), 1.0 + _signed(level * 0.9, generator))


OPS = {
    f.__name__: f
    for f in (
        identity, auto_contrast, equalize, rotate, shear_x, shear_y, translate_x, translate_y,
        posterize, solarize, color, contrast, brightness,
    )
}  # fmt: skip


class RandAugment:
    """``num_ops`` random operations per image at magnitude ``magnitude`` (0-10), each applied with ``prob``."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5, prob: float = 0.5):
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        if not 0 <= magnitude <= 10:
            raise ValueError(f"magnitude must be in [0, 10], got {magnitude}")
        self.num_ops, self.magnitude, self.magnitude_std, self.prob = num_ops, magnitude, magnitude_std, prob
        self.names = list(OPS)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        picks = torch.randint(0, len(self.names), (self.num_ops,), generator=generator).tolist()
        for pick in picks:
            if _rand(generator) >= self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude += self.magnitude_std * torch.randn((), generator=generator).item()
            level = min(max(magnitude, 0.0), 10.0) / 10.0
            image = OPS[self.names[pick]](image, level, generator)
        return image

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, ops={self.names})"
