"""An ImageFolder-style dataset: ``root/<class name>/<image file>``, classes in sorted order, PIL decoding.

Problems are reported where they are found and name what is wrong: a missing or class-less root and
a class folder without images when the dataset is built; an image that cannot be decoded when it is
read (in whichever worker reads it; the DataLoader re-raises the message in the main process).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class UnreadableImageError(RuntimeError):
    """An image file exists but PIL cannot decode it."""


def find_classes(root: Path) -> list[str]:
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is a file, expected a directory of class folders")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"image folder {str(root)!r} has no class folders: expected {str(root)!r}/<class name>/<image files>"
        )
    return classes


def find_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise FileNotFoundError(
                f"class folder {str(root / name)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        samples.extend((path, label) for path in files)
    return samples


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to a float (3, H, W) tensor in [0, 1]; the error names the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UnreadableImageError(f"cannot read image {str(path)!r}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` -> (image (3, H, W) float in [0, 1], label int)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.classes = find_classes(self.root)
        self.samples = find_images(self.root, self.classes)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return read_image(path), label

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {self.num_classes} classes)"
