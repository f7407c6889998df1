"""From a dataset name to DataLoaders: datasets by name or directory, per-sample seeded transforms, workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bralib.data import transforms as T
from bralib.data.sampler import ShardedSampler

# Channel statistics of digits-pairs canvases (mostly black): measured on 2,048 training images.
DIGITS_MEAN, DIGITS_STD = (0.097, 0.097, 0.097), (0.182, 0.182, 0.182)
BUILTIN = ("digits-pairs",)


class SeededTransform(torch.utils.data.Dataset):
    """Item ``(index, seed)``: image ``index`` of ``base`` through ``transform``, its generator seeded by ``seed``.

    With ``fresh_samples`` the base dataset must have ``sample(index, variant)``: the seed also picks
    the variant, so a generated dataset draws new images every epoch (the sampler's seed depends on
    the epoch) and stays deterministic.
    """

    def __init__(self, base: torch.utils.data.Dataset, transform: T.Transform, fresh_samples: bool = False):
        self.base, self.transform, self.fresh_samples = base, transform, fresh_samples

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, index_seed(item))
        image, label = self.base.sample(index, seed) if self.fresh_samples else self.base[index]
        return self.transform(image, torch.Generator().manual_seed(seed)), label


def index_seed(index: int) -> int:
    return 0x5EED + index


@dataclass
class DataSpec:
    """What the loop needs to know about a dataset."""

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    num_classes: int
    image_size: int


def build_datasets(
    data: str,
    *,
    image_size: int = 224,
    train_size: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    relation: str = "partner",
    distractors: int = 2,
    strokes: int = 0,
    randaugment_ops: int = 2,
    randaugment_magnitude: float = 9.0,
    random_erasing: float = 0.0,
) -> DataSpec:
    """``data`` is ``"digits-pairs"`` or a directory with ``train/`` and ``val/`` ImageFolder trees.

    digits-pairs images are 64x64. Training draws new layouts every epoch (same source digits, new
    positions, distractors and strokes: ``train_size`` images per epoch, never the same twice) and no
    other augmentation: random crops would cut away the digits the label is about, and a mirrored digit
    is another glyph. Validation images are fixed. Image folders get the ImageNet recipe: random-resized
    crop + flip + RandAugment (+ random erasing) for training, resize + centre crop for evaluation.
    """
    if data == "digits-pairs":
        from bralib.data.digits_pairs import DigitsPairs

        if image_size != 64:
            raise ValueError(f"digits-pairs images are 64x64; set image_size=64 (got {image_size})")
        normalize = T.Normalize(DIGITS_MEAN, DIGITS_STD)
        layout = dict(seed=seed, relation=relation, distractors=distractors, strokes=strokes)
        train, val = DigitsPairs("train", train_size, **layout), DigitsPairs("val", val_size, **layout)
        return DataSpec(
            SeededTransform(train, normalize, fresh_samples=True),
            SeededTransform(val, normalize),
            train.num_classes,
            64,
        )
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(
            f"data {data!r} is neither a built-in dataset {list(BUILTIN)} nor an existing directory"
        )
    from bralib.data.folder import ImageFolder

    train, val = ImageFolder(root / "train"), ImageFolder(root / "val")
    if train.classes != val.classes:
        raise ValueError(f"train and val class folders differ: {train.classes} vs {val.classes}")
    _verify_subset(val, val_size)  # a damaged validation image found now, not after a whole training epoch
    train_tf = T.imagenet_train_transform(image_size, randaugment_ops, randaugment_magnitude, random_erasing)
    train_set = SeededTransform(_subset(train, train_size), train_tf)
    val_set = SeededTransform(_subset(val, val_size), T.imagenet_eval_transform(image_size))
    return DataSpec(train_set, val_set, train.num_classes, image_size)


def _verify_subset(dataset, size: int | None) -> None:
    """Open the header of every image that :func:`_subset` keeps (cheap: nothing is decoded)."""
    if size is None or size >= len(dataset):
        dataset.verify()
    else:
        step = len(dataset) / size
        dataset.verify([int(i * step) for i in range(size)])


def _subset(dataset: torch.utils.data.Dataset, size: int | None) -> torch.utils.data.Dataset:
    if size is None or size >= len(dataset):
        return dataset
    step = len(dataset) / size  # evenly spread, so every class keeps its share
    return torch.utils.data.Subset(dataset, [int(i * step) for i in range(size)])


def build_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` with a :class:`ShardedSampler` (shuffled, drop-last for training)."""
    sampler = ShardedSampler(
        len(dataset), num_replicas=world_size, rank=rank, shuffle=train, seed=seed, drop_last=train,
        batch_size=batch_size,
    )  # fmt: skip
    if train and sampler.per_rank() == 0:
        raise ValueError(
            f"the training set has {len(dataset)} images: too few for batch_size={batch_size} on {world_size} "
            f"process(es); lower --batch-size or raise --train-size"
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,  # the sampler already drops the incomplete batch
        generator=torch.Generator().manual_seed(seed),  # base seed of workers; keeps the global RNG untouched
        persistent_workers=False,
    )
