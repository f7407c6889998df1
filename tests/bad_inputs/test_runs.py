"""Runs lose nothing: one run per --out, a full disk leaves no partial file, a bad validation image is found before
training, an evaluation that fails still leaves the epoch's checkpoint, and logs show progress without a terminal."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from run_files import TINY, trained_run

from bralib.data import UnreadableImageError
from bralib.errors import WriteError
from bralib.io import save_torch_file
from bralib.train import TrainConfig, read_log, train
from bralib.train.checkpoint import load_checkpoint, save_checkpoint
from bralib.train.loop import Trainer
from bralib.train.runlock import LOCK_NAME, RunLock, RunLockedError


def _lock(out, pid, host=None):
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def test_a_second_run_on_the_same_out_is_refused_with_the_first_ones_pid(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):  # the first run, still going
        with pytest.raises(RunLockedError, match=rf"another training run \(process {os.getpid()} on host .*\) is "
                                                 rf"writing to '{out}': wait for it"):  # fmt: skip
            train(TrainConfig(**{**TINY, "out": str(out)}))
    assert sorted(p.name for p in out.iterdir()) == []  # the refused run wrote nothing, the lock is gone


def test_a_live_process_of_another_run_holds_the_lock(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _lock(tmp_path / "run", sleeper.pid)
        with pytest.raises(RunLockedError, match=rf"process {sleeper.pid} on host"):
            train(TrainConfig(**{**TINY, "out": str(tmp_path / "run")}))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(tmp_path / "run", dead.pid)
    train(TrainConfig(**{**TINY, "out": str(tmp_path / "run")}))
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.parametrize("content, message", [
    ("not json", r"an unknown process \(unreadable lock file\)"),
    (json.dumps({"pid": 1, "host": "another-machine"}), r"process 1 on host 'another-machine'"),
])  # fmt: skip
def test_a_lock_that_cannot_be_checked_is_respected(tmp_path, content, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(content)
    with pytest.raises(RunLockedError, match=message + r".*if no such run is alive, delete"):
        train(TrainConfig(**{**TINY, "out": str(tmp_path / "run")}))


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    config = TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "data": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError):
        train(config)
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["torch.save", "os.fsync", "os.replace"])
def test_a_full_disk_leaves_no_tmp_and_the_old_file_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()
    module, name = where.split(".")
    monkeypatch.setattr({"torch": torch, "os": os}[module], name, _disk_full)
    with pytest.raises(WriteError, match=rf"cannot write checkpoint '{path}': the disk is full .*unchanged") as info:
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"] and path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1


def test_a_full_disk_during_training_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from bralib.cli import main

    monkeypatch.setattr("bralib.io.torch.save", _disk_full)
    argv = ["train", *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items() if k != "progress"), []),
            "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bralib train: error: cannot write checkpoint" in err and "the disk is full" in err
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "run").iterdir())


def test_a_full_disk_at_the_end_of_a_run_leaves_no_partial_metrics(tmp_path, monkeypatch):
    import bralib.io

    real = bralib.io.os.replace

    def replace(source, target):
        if str(target).endswith("metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(source, target)

    monkeypatch.setattr(bralib.io.os, "replace", replace)
    with pytest.raises(WriteError, match=r"cannot write '.*metrics\.json': No space left on device"):
        train(TrainConfig(**{**TINY, "out": str(tmp_path / "run")}))
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoint.pt", "config.toml", "log.jsonl"]  # the checkpoint is whole; no .tmp is left


def test_another_write_error_is_named_too(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(WriteError, match=r"cannot write weights '.*w\.pt': Permission denied"):
        save_torch_file(tmp_path / "w.pt", {}, what="weights")
    assert list(tmp_path.iterdir()) == []


def _image_folder(root, broken_val: str | None = None):
    for split in ("train", "val"):
        for label in ("a", "b"):
            for i in range(8 if split == "train" else 2):
                (root / split / label).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((12, 12, 3), 30 * i, np.uint8)).save(root / split / label / f"{i}.png")
    if broken_val:
        (root / "val" / "b" / broken_val).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


def test_a_damaged_validation_image_is_found_before_the_first_step(tmp_path):
    data = _image_folder(tmp_path / "data", broken_val="zz_broken.png")
    out = tmp_path / "run"
    config = TrainConfig(**{**TINY, "data": str(data), "image_size": 32, "train_size": None, "val_size": None,
                            "out": str(out)})  # fmt: skip
    with pytest.raises(UnreadableImageError, match=r"cannot read image '.*val/b/zz_broken\.png'"):
        train(config)
    assert not (out / "log.jsonl").exists()  # no epoch was spent before finding it


def test_an_evaluation_that_fails_still_leaves_the_epochs_checkpoint(tmp_path, monkeypatch):
    def fail(self, epoch):
        raise UnreadableImageError("cannot read image 'val/x.png': broken after the check")

    monkeypatch.setattr(Trainer, "evaluate", fail)
    out = tmp_path / "run"
    with pytest.raises(UnreadableImageError, match="val/x.png"):
        train(TrainConfig(**{**TINY, "out": str(out)}))
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2  # the epoch's training is kept: --resume goes on


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    trained_run(tmp_path / "run", progress=True, train_size=24, batch_size=4, val_size=4)
    lines = capsys.readouterr().err.splitlines()
    steps = [line for line in lines if line.startswith("epoch 1/1 step ") and "/6: loss " in line]
    assert len(steps) == 6 and all("images/s" in line and "elapsed" in line for line in steps)
    assert any("top1" in line and "elapsed" in line for line in lines)  # the epoch's validation line
    assert len(read_log(tmp_path / "run")) == 7


def test_no_progress_prints_no_lines(tmp_path, capsys):
    trained_run(tmp_path / "run", progress=False)
    assert "step 1/2" not in capsys.readouterr().err


@pytest.mark.slow
def test_under_torchrun_a_locked_out_stops_every_process(tmp_path):
    """Rank 0 finds the lock and tells the others: they stop too instead of waiting for it in a collective (torchrun
    may end the slower one first, so one line or two), well before the 120 s timeout."""
    import shutil
    from pathlib import Path

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "run"
    with RunLock(out):
        done = subprocess.run(
            [torchrun, "--standalone", "--nproc_per_node=2", "-m", "bralib.train", "--train-size", "16",
             "--val-size", "8", "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--threads", "1",
             "--device", "cpu", "--out", str(out)],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if "error: another training run (process" in line]
    assert 1 <= len(refusals) <= 2 and "Traceback" not in done.stderr.split("error: another")[0], done.stderr[-2000:]
