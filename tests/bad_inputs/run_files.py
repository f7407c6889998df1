"""Small files the bad-input tests start from: a real training checkpoint, its exported weights, an official-layout
weights file, and ways to damage them. Built in well under a second (biformer_nano, 16 images of 64x64)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

import bralib
from bralib.models import to_official_state_dict
from bralib.train import TrainConfig, export_weights, train
from bralib.train.checkpoint import FORMAT

TINY = dict(model="biformer_nano", epochs=1, train_size=16, val_size=8, batch_size=8, num_workers=0, threads=1,
            progress=False, device="cpu")  # fmt: skip


def trained_run(out: Path, **overrides) -> Path:
    """Train biformer_nano for one epoch of 2 steps into ``out``; returns its checkpoint.pt."""
    train(TrainConfig(**{**TINY, "out": str(out), **overrides}))
    return out / "checkpoint.pt"


def exported(checkpoint: Path, target: Path) -> Path:
    export_weights(checkpoint, target)
    return target


def official_weights(target: Path) -> Path:
    """biformer_nano's fresh weights under the released code's names, as its ``.pth`` files hold them."""
    torch.manual_seed(0)
    torch.save({"model": to_official_state_dict(bralib.create_model("biformer_nano"))}, target)
    return target


def hostile_checkpoint(target: Path, factory: str, model_args: dict | None = None) -> Path:
    """A checkpoint that passes torch.load(weights_only=True) and names ``factory`` (e.g. 'torch.hub:load')."""
    config = {**TrainConfig(**TINY).to_dict(), "model": factory, "model_args": model_args or {}}
    torch.save({"format": FORMAT, "config": config, "num_classes": 10, "model": {}, "ema": None, "step": 1}, target)
    return target


def largest_entry(path: Path) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as archive:
        return max(archive.infolist(), key=lambda info: info.file_size)


def flip_bytes(path: Path, *, count: int = 4096, entry: zipfile.ZipInfo | None = None) -> str:
    """Invert ``count`` bytes inside the data of ``entry`` (default: the largest tensor); returns its name.

    The zip directory stays intact: only a CRC-32 check can tell (torch's reader does not check).
    """
    entry = entry or largest_entry(path)
    data = bytearray(path.read_bytes())
    # local header: 30 bytes + name + extra field, then the stored (uncompressed) data
    name_len = int.from_bytes(data[entry.header_offset + 26 : entry.header_offset + 28], "little")
    extra_len = int.from_bytes(data[entry.header_offset + 28 : entry.header_offset + 30], "little")
    start = entry.header_offset + 30 + name_len + extra_len
    count = min(count, entry.file_size)
    data[start : start + count] = bytes(255 - b for b in data[start : start + count])
    path.write_bytes(bytes(data))
    return entry.filename
