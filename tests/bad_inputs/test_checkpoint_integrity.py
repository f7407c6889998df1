"""Every load checks the file whole first: flipped bytes, a wrong SHA-256, empty, truncated, text or foreign files,
and checkpoints of the wrong kind each get one message naming the file and what was expected."""

from __future__ import annotations

import hashlib
import shutil
import zipfile

import numpy as np
import pytest
import torch
from run_files import TINY, exported, flip_bytes, official_weights, trained_run

import bralib
from bralib.errors import CheckpointError
from bralib.io import sha256_path
from bralib.models import load_official_weights
from bralib.train import TrainConfig, evaluate_checkpoint, load_trained_model, train
from bralib.train.checkpoint import FORMAT, load_checkpoint
from bralib.train.model import load_weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One real run's checkpoint, its exported weights (with .sha256) and an official-layout weights file."""
    root = tmp_path_factory.mktemp("integrity")
    checkpoint = trained_run(root / "run")
    return {
        "checkpoint": checkpoint,
        "exported": exported(checkpoint, root / "slim.pt"),
        "official": official_weights(root / "official.pth"),
    }


@pytest.fixture
def copy(files, tmp_path):
    """A fresh copy of one of ``files`` (and its .sha256 record), free to damage."""

    def make(kind: str, name: str = "file.pt"):
        target = tmp_path / name
        shutil.copy(files[kind], target)
        if sha256_path(files[kind]).exists():
            sha256_path(target).write_text(sha256_path(files[kind]).read_text().replace(files[kind].name, name))
        return target

    return make


def _nano():
    return bralib.create_model("biformer_nano")


LOADERS = {
    "load_checkpoint": ("checkpoint", lambda p: load_checkpoint(p)),
    "load_trained_model": ("checkpoint", lambda p: load_trained_model(p)),
    "evaluate_checkpoint": ("checkpoint", lambda p: evaluate_checkpoint(p, device="cpu")),
    "--init": ("checkpoint", lambda p: load_weights(bralib.create_model("biformer_nano", num_classes=10), p)),
    "exported weights": ("exported", lambda p: load_trained_model(p)),
    "load_official_weights": ("official", lambda p: load_official_weights(_nano(), p)),
}


@pytest.mark.parametrize("loader", LOADERS, ids=list(LOADERS))
def test_the_files_load_when_whole(copy, loader):
    kind, load = LOADERS[loader]
    load(copy(kind))  # the baseline the damaged cases differ from


@pytest.mark.parametrize("loader", LOADERS, ids=list(LOADERS))
def test_flipped_bytes_in_a_tensor_are_found(copy, loader):
    kind, load = LOADERS[loader]
    path = copy(kind)
    sha256_path(path).unlink(missing_ok=True)  # the CRC-32 alone must catch it
    entry = flip_bytes(path)
    with pytest.raises(CheckpointError, match=rf"is damaged: entry '{entry}' fails its CRC-32 check"):
        load(path)


def test_resume_from_a_damaged_checkpoint_is_refused(files, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(files["checkpoint"], out / "checkpoint.pt")
    entry = flip_bytes(out / "checkpoint.pt", count=16)
    with pytest.raises(CheckpointError, match=rf"--resume checkpoint .*checkpoint\.pt.* entry '{entry}' fails"):
        train(TrainConfig(**{**TINY, "out": str(out), "resume": True}))


def test_exported_weights_record_their_sha256(files):
    digest = hashlib.sha256(files["exported"].read_bytes()).hexdigest()
    assert sha256_path(files["exported"]).read_text().split() == [digest, "slim.pt"]


@pytest.mark.parametrize("record, message", [
    ("0" * 64 + "  file.pt\n", r"was changed: its SHA-256 is [0-9a-f]{64}, but file\.pt\.sha256 records 0{64}"),
    ("not a digest\n", r"does not hold a SHA-256 \(expected '<64 hex digits>  file\.pt'\)"),
    ("", r"does not hold a SHA-256"),
])  # fmt: skip
def test_a_wrong_sha256_record_is_refused(copy, record, message):
    path = copy("exported")
    sha256_path(path).write_text(record)
    with pytest.raises(CheckpointError, match=message):
        load_trained_model(path)


def test_a_training_checkpoint_overwritten_drops_its_stale_sha256(copy, tmp_path):
    from bralib.train.checkpoint import save_checkpoint

    path = copy("exported")
    save_checkpoint(path, {"step": 1})  # a new file: the old record would now be wrong, so it goes
    assert not sha256_path(path).exists() and load_checkpoint(path)["step"] == 1


def _write(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)


def _truncated(fraction):
    def cut(path, source):
        data = source.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return cut


def _foreign_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "a zip archive, but not one torch.save wrote")


UNREADABLE = {
    "empty": (lambda p, s: _write(p, b""), r"is empty \(0 bytes\), expected a file written by torch.save"),
    "truncated to half": (_truncated(0.5), r"is truncated or damaged: its zip directory cannot be read"),
    "last byte missing": (_truncated(0.99999), r"is truncated or damaged"),
    "text": (lambda p, s: _write(p, "model = 'biformer_nano'\n"), r"is not a PyTorch file: it is a text file"),
    "json": (lambda p, s: _write(p, '{"model": {}}'), r"is not a PyTorch file: it is a text file"),
    "random bytes": (lambda p, s: _write(p, bytes(range(256)) * 4), r"is not a PyTorch file: it is a file starting"),
    "numpy .npy": (lambda p, s: np.save(open(p, "wb"), np.zeros(3)), r"is not a PyTorch file"),
    "a zip of other files": (
        lambda p, s: _foreign_zip(p),
        r"cannot be read by torch.load",
    ),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
@pytest.mark.parametrize("loader", ["load_checkpoint", "load_official_weights"])
def test_unreadable_files_get_one_clear_message(files, tmp_path, case, loader):
    make, message = UNREADABLE[case]
    path = tmp_path / "bad.pt"
    make(path, files["checkpoint"])
    load = LOADERS[loader][1]
    with pytest.raises(CheckpointError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("where", ["a directory", "missing"])
def test_missing_or_directory(tmp_path, where):
    path = tmp_path / "run"
    if where == "a directory":
        path.mkdir()
    with pytest.raises(CheckpointError, match="does not exist" if where == "missing" else "is a directory"):
        load_checkpoint(path)


WRONG_KIND = {
    "bare state dict": ({"w": torch.zeros(2)}, r"not a bralib training checkpoint .*\(it looks like a bare state dict"),
    "a list": ([torch.zeros(2)], r"not a bralib training checkpoint .*found 'list'"),
    "another format": ({"format": "timm/1", "model": {}}, r"format 'bralib.train.checkpoint/1'\); found 'timm/1'"),
    "no model entry": (
        {"format": FORMAT, "config": {}, "num_classes": 10, "step": 0},
        r"lacks \['model'\]: a checkpoint for inference needs",
    ),
    "config not a dict": (
        {"format": FORMAT, "config": [1], "num_classes": 10, "model": {}, "step": 0},
        r"'config' and 'model' entries must be dicts",
    ),
    "config with unknown field": (
        {"format": FORMAT, "config": {"learning_rate": 1}, "num_classes": 10, "model": {}, "step": 0},
        r"unknown field\(s\) \['learning_rate'\]; allowed",
    ),
    "config of wrong type": (
        {"format": FORMAT, "config": {"epochs": "10"}, "num_classes": 10, "model": {}, "step": 0},
        r"epochs must be an integer",
    ),
}


@pytest.mark.parametrize("case", WRONG_KIND, ids=list(WRONG_KIND))
def test_a_checkpoint_of_the_wrong_kind_says_what_it_found(tmp_path, case):
    payload, message = WRONG_KIND[case]
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=message):
        load_trained_model(tmp_path / "other.pt")


def test_exported_weights_cannot_resume_a_run(files, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(files["exported"], out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"holds exported weights .* cannot resume a run; .* with --init"):
        train(TrainConfig(**{**TINY, "out": str(out), "resume": True}))


def test_a_checkpoint_with_missing_training_state_cannot_resume(files, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    payload = torch.load(files["checkpoint"], weights_only=True)
    del payload["optimizer"], payload["rng"]
    torch.save(payload, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"lacks \['optimizer', 'rng'\]: a checkpoint for resume needs"):
        train(TrainConfig(**{**TINY, "out": str(out), "resume": True}))


def test_official_weights_in_torch_legacy_format_still_load(files, tmp_path):
    state = torch.load(files["official"], weights_only=True)
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    load_official_weights(_nano(), tmp_path / "legacy.pth")
    with pytest.raises(CheckpointError, match="is not a PyTorch file"):  # never for bralib's own checkpoints
        load_checkpoint(tmp_path / "legacy.pth")
