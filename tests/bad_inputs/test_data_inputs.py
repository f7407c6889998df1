"""Image files of every pixel type read at their true brightness; images that cannot be used name the file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from bralib.data import UnreadableImageError, build_datasets
from bralib.data.folder import read_image, verify_image

MID = 0.5


def _png16_rgb(path, value: int, size=(3, 4)):
    """A 48-bit RGB PNG written by hand (numpy and Pillow cannot write one)."""
    h, w = size
    row = b"\0" + struct.pack(">H", value) * 3 * w
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))  # fmt: skip
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * h))
                     + chunk(b"IEND", b""))  # fmt: skip


WRITERS = {
    "8-bit grey PNG": ("png", lambda: Image.fromarray(np.full((3, 4), 128, np.uint8)), 128 / 255),
    "8-bit RGB PNG": ("png", lambda: Image.fromarray(np.full((3, 4, 3), 128, np.uint8)), 128 / 255),
    "RGBA PNG": ("png", lambda: Image.fromarray(np.full((3, 4, 4), 128, np.uint8)), 128 / 255),
    "palette GIF": ("gif", lambda: Image.fromarray(np.full((3, 4), 128, np.uint8)).convert("P"), 128 / 255),
    "16-bit grey PNG": ("png", lambda: Image.fromarray(np.full((3, 4), 32768, np.uint16)), 32768 / 65535),
    "16-bit grey PNG, white": ("png", lambda: Image.fromarray(np.full((3, 4), 65535, np.uint16)), 1.0),
    "16-bit grey PNG, dark": ("png", lambda: Image.fromarray(np.full((3, 4), 1000, np.uint16)), 1000 / 65535),
    "16-bit TIFF": ("tif", lambda: Image.fromarray(np.full((3, 4), 16384, np.uint16)), 16384 / 65535),
    "float TIFF 0.5": ("tif", lambda: Image.fromarray(np.full((3, 4), MID, np.float32)), MID),
    "float TIFF 0.1": ("tif", lambda: Image.fromarray(np.full((3, 4), 0.1, np.float32)), np.float32(0.1)),
    "float TIFF 1.0": ("tif", lambda: Image.fromarray(np.full((3, 4), 1.0, np.float32)), 1.0),
}


@pytest.mark.parametrize("case", WRITERS, ids=list(WRITERS))
def test_pixel_types_read_at_their_true_brightness(tmp_path, case):
    suffix, make, expected = WRITERS[case]
    path = tmp_path / f"image.{suffix}"
    make().save(path)
    image = read_image(path)
    assert image.shape == (3, 3, 4) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.full_like(image, float(expected)), atol=1 / 255, rtol=0)


def test_48_bit_rgb_png_reads_at_its_true_brightness(tmp_path):
    _png16_rgb(tmp_path / "rgb48.png", 32768)
    image = read_image(tmp_path / "rgb48.png")
    torch.testing.assert_close(image, torch.full_like(image, 0.5), atol=1 / 255, rtol=0)


UNUSABLE = {
    "float TIFF above 1": (lambda: Image.fromarray(np.full((3, 4), 2.0, np.float32)), "tif",
                           r"float image with values in \[2, 2\]; .*must lie in \[0, 1\]"),
    "float TIFF below 0": (lambda: Image.fromarray(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)), "tif",
                           r"float image with values in \[-1, 1\]"),
    "float TIFF in 0-255": (lambda: Image.fromarray(np.full((3, 4), 200.0, np.float32)), "tif",
                            r"float image with values in \[200, 200\].*rescale the file"),
    "float TIFF with NaN": (lambda: Image.fromarray(np.array([[np.nan, 0.5]], np.float32)), "tif",
                            r"float image with values in \[nan, nan\]"),
    "32-bit integer TIFF": (lambda: Image.fromarray(np.full((3, 4), 70000, np.int32)), "tif",
                            r"32-bit integer image with values in \[70000, 70000\]; .*16 bits \(0-65535\)"),
    "negative integer TIFF": (lambda: Image.fromarray(np.full((3, 4), -5, np.int32)), "tif",
                              r"32-bit integer image with values in \[-5, -5\]"),
}  # fmt: skip


@pytest.mark.parametrize("case", UNUSABLE, ids=list(UNUSABLE))
def test_images_out_of_range_name_the_file_and_the_range(tmp_path, case):
    make, suffix, message = UNUSABLE[case]
    path = tmp_path / f"odd.{suffix}"
    make().save(path)
    with pytest.raises(UnreadableImageError, match=rf"image '.*odd\.{suffix}' is a {message}"):
        read_image(path)


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x 1000: PIL refuses
    with pytest.raises(UnreadableImageError, match=r"image '.*bomb\.png' is refused as a possible decompression bomb"):
        read_image(tmp_path / "bomb.png")
    with pytest.raises(UnreadableImageError, match=r"bomb\.png"):  # also when the dataset checks headers
        verify_image(tmp_path / "bomb.png")


BROKEN = {
    "text with .png": (b"just some words", r"cannot identify image file"),
    "PNG signature only": (b"\x89PNG\r\n\x1a\n", r"cannot read image"),
    "JPEG header only": (b"\xff\xd8\xff\xe0\0\x10JFIF\0", r"cannot read image"),
    "empty file": (b"", r"cannot identify image file"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_validation_files_are_found_when_the_dataset_is_built(tmp_path, case):
    content, message = BROKEN[case]
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / "a" / "ok.png")
    (tmp_path / "val" / "a" / "zz.png").write_bytes(content)
    with pytest.raises(UnreadableImageError, match=rf"{message}.*|cannot read image '.*zz\.png'") as info:
        build_datasets(str(tmp_path), image_size=8)
    assert "zz.png" in str(info.value)


def test_only_the_validation_images_in_use_are_checked(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / "a" / f"{i}.png")
    (tmp_path / "val" / "a" / "3.png").write_bytes(b"broken")  # not among the 2 of val_size=2 (indices 0 and 2)
    spec = build_datasets(str(tmp_path), image_size=8, val_size=2)
    assert len(spec.val) == 2
