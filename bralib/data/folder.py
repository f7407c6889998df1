"""An ImageFolder-style dataset: ``root/<class name>/<image file>``, classes in sorted order, PIL decoding.

Problems are reported where they are found and name what is wrong: a missing or class-less root and
a class folder without images when the dataset is built; an image that cannot be decoded when it is
read (in whichever worker reads it; the DataLoader re-raises the message in the main process).
:meth:`ImageFolder.verify` opens every file's header up front (the loader does it for validation sets),
so a damaged validation image is found before training starts, not after its first epoch.

Pixel values are scaled by the range of the image's own type: 8-bit images by 255, 16-bit ones (PNG
``I;16``, TIFF) by 65535, float images (TIFF mode ``F``) are taken as they are and must lie in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bralib.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class UnreadableImageError(UsageError, RuntimeError):
    """An image file that cannot be used: PIL cannot decode it, it is too large, or its values are out of range."""


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


def _pil_errors() -> tuple[type[Exception], ...]:
    from PIL import Image, UnidentifiedImageError

    return (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def _describe(path: Path, err: Exception) -> str:
    from PIL import Image

    if isinstance(err, Image.DecompressionBombError):
        return (
            f"image {str(path)!r} is refused as a possible decompression bomb ({err}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust this file"
        )
    return f"cannot read image {str(path)!r}: {err}"


def image_to_array(image, path: Path) -> np.ndarray:
    """A PIL image as float32 (H, W, 3) in [0, 1], scaled by the range of its own pixel type."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit PNG / TIFF (Pillow reads 16-bit greyscale as I;16 or I)
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 65535:
            raise UnreadableImageError(
                f"image {str(path)!r} is a 32-bit integer image with values in [{low:g}, {high:g}]; bralib reads "
                "integer images of 8 bits (0-255) or 16 bits (0-65535)"
            )
        return np.repeat((values / 65535.0).astype(np.float32)[..., None], 3, axis=-1)
    if mode == "F":  # 32-bit float TIFF: taken as it is
        values = np.asarray(image, dtype=np.float32)
        finite = np.isfinite(values).all()
        low, high = (float(values.min()), float(values.max())) if finite else (float("nan"), float("nan"))
        if not finite or low < 0.0 or high > 1.0:
            raise UnreadableImageError(
                f"image {str(path)!r} is a float image with values in [{low:g}, {high:g}]; bralib reads float images "
                "as they are, so their values must lie in [0, 1] (rescale the file)"
            )
        return np.repeat(values[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to a float (3, H, W) tensor in [0, 1]; the error names the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = image_to_array(image, path)
    except UnreadableImageError:
        raise
    except _pil_errors() as err:
        raise UnreadableImageError(_describe(path, err)) from err
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def verify_image(path: Path) -> None:
    """Open ``path``'s header and let PIL check what it can without decoding (PNG chunk CRCs, sizes)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except _pil_errors() as err:
        raise UnreadableImageError(_describe(path, err)) from err


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` -> (image (3, H, W) float in [0, 1], label int)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.classes = find_classes(self.root)
        self.samples = find_images(self.root, self.classes)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def verify(self, indices: list[int] | None = None) -> None:
        """Check that every image (or those at ``indices``) opens; the error names the first damaged file."""
        for index in range(len(self)) if indices is None else indices:
            verify_image(self.samples[index][0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return read_image(path), label

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {self.num_classes} classes)"
