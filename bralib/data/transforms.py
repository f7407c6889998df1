"""Image transforms written in torch: the ImageNet training and evaluation pipelines without torchvision.

Every random transform takes an explicit ``torch.Generator``. The loader seeds one generator per
sample from (seed, epoch, index), so an image's augmentation depends neither on the number of worker
processes nor on what ran before it: a resumed run sees exactly the images an uninterrupted run saw.

Images are float tensors (C, H, W) with values in [0, 1] until :class:`Normalize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bralib.data.randaugment import RandAugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One float in [low, high) drawn from ``generator``."""
    return low + (high - low) * torch.rand((), generator=generator).item()


def resize(image: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(C, H, W) -> (C, *size) with antialiasing when shrinking (what PIL does)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    antialias = mode in ("bilinear", "bicubic")
    out = F.interpolate(
        image[None], size=size, mode=mode, align_corners=False if antialias else None, antialias=antialias
    )
    return out[0].clamp_(0.0, 1.0)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) -> (C, size, size) from the centre; H and W must be >= size."""
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"center_crop needs an image of at least {size}x{size}, got {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def resize_shorter(image: torch.Tensor, shorter: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize so the shorter side is ``shorter`` pixels, keeping the aspect ratio."""
    height, width = image.shape[-2:]
    scale = shorter / min(height, width)
    return resize(image, (max(shorter, round(height * scale)), max(shorter, round(width * scale))), mode)


def random_resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering ``scale`` of the area with aspect ratio in ``ratio``.

    Ten tries at a box that fits, as in the Inception paper's recipe; then the central crop of the
    closest allowed aspect ratio.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * uniform(generator, *scale)
        aspect = math.exp(uniform(generator, *log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCrop:
    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0), ratio=(3 / 4, 4 / 3), mode="bilinear"):
        self.size, self.scale, self.ratio, self.mode = size, scale, ratio, mode

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(*image.shape[-2:], generator, self.scale, self.ratio)
        return resize(image[..., top : top + h, left : left + w], (self.size, self.size), self.mode)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return image.flip(-1) if uniform(generator) < self.p else image


class Normalize:
    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (image - self.mean) / self.std


class RandomErasing:
    """With probability ``p``, replace a random box (2-33 % of the area, aspect 0.3-3.3) by normal noise.

    Runs after :class:`Normalize`, so the noise has the statistics of a normalised image (timm's
    ``re_mode="pixel"``, one value per pixel and channel). Ten tries at a box that fits, else no change.
    """

    def __init__(self, p: float = 0.25, scale: tuple[float, float] = (0.02, 1 / 3), ratio=(0.3, 1 / 0.3)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.p <= 0 or uniform(generator) >= self.p:
            return image
        channels, height, width = image.shape
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * uniform(generator, *self.scale)
            aspect = math.exp(uniform(generator, *log_ratio))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                image = image.clone()
                image[:, top : top + h, left : left + w] = torch.randn(channels, h, w, generator=generator)
                return image
        return image


class EvalResizeCrop:
    """Resize the shorter side to ``size / crop_pct`` then take the central ``size`` crop (256 -> 224)."""

    def __init__(self, size: int, crop_pct: float = 0.875, mode: str = "bicubic"):
        self.size, self.crop_pct, self.mode = size, crop_pct, mode

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return center_crop(resize_shorter(image, math.floor(self.size / self.crop_pct), self.mode), self.size)


class Compose:
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in self.transforms:
            image = transform(image, generator)
        return image

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


def imagenet_train_transform(
    size: int, randaugment_ops: int = 2, randaugment_magnitude: float = 9.0, random_erasing: float = 0.0
) -> Compose:
    """Random-resized crop, flip, RandAugment (``randaugment_ops=0``: off), normalize, random erasing (prob.)."""
    steps: list[Transform] = [RandomResizedCrop(size), RandomHorizontalFlip()]
    if randaugment_ops > 0:
        steps.append(RandAugment(randaugment_ops, randaugment_magnitude))
    steps.append(Normalize())
    if random_erasing > 0:
        steps.append(RandomErasing(random_erasing))
    return Compose(steps)


def imagenet_eval_transform(size: int, crop_pct: float = 0.875) -> Compose:
    """Resize to size / crop_pct (bicubic), centre crop, normalize: 256 -> 224 for size 224."""
    return Compose([EvalResizeCrop(size, crop_pct), Normalize()])
