"""Data for training: the built-in ``digits-pairs`` task, ImageFolder trees, torch-only transforms, loaders."""

from bralib.data.folder import ImageFolder, UnreadableImageError
from bralib.data.loader import DataSpec, SeededTransform, build_datasets, build_loader
from bralib.data.sampler import ShardedSampler

__all__ = [
    "DataSpec",
    "ImageFolder",
    "SeededTransform",
    "ShardedSampler",
    "UnreadableImageError",
    "build_datasets",
    "build_loader",
]
