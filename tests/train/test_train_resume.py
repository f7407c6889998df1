"""Checkpoints: a run SIGKILLed mid-epoch and resumed ends bit-identical; wrong checkpoints fail with reasons."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bralib.train import TrainConfig, train
from bralib.train.checkpoint import load_model_state, save_checkpoint
from bralib.train.model import build_model

HERE = Path(__file__).parent
MODEL = "biformer_nano"
# 3 epochs of 12 steps; checkpoints at steps 5, 10, 15, ... fall mid-epoch. Workers 0 and one thread:
# the same sequence of float operations in both runs.
ARGS = [
    "--model", MODEL, "--train-size", "96", "--val-size", "16", "--epochs", "3", "--batch-size", "8",
    "--checkpoint-every", "5", "--num-workers", "0", "--threads", "1", "--deterministic", "--drop-path", "0.1",
    "--mixup", "0.8", "--ema-decay", "0.99", "--device", "cpu", "--no-progress",
]  # fmt: skip


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bralib.train", *ARGS, "--out", str(out), *extra]


def environment() -> dict[str, str]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    env = environment()
    subprocess.run(command(tmp_path / "straight"), env=env, check=True, capture_output=True, timeout=300)

    killed = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read().decode()[-2000:]
    interrupted = torch.load(checkpoint, weights_only=True)
    assert 0 < interrupted["step"] < 36 and interrupted["step"] % 12 != 0  # killed mid-epoch, mid-run

    subprocess.run(command(tmp_path / "killed", "--resume"), env=env, check=True, capture_output=True, timeout=300)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    assert a["step"] == b["step"] == 36
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), f"model weight {name} differs after resume"
    for name, value in a["ema"]["module"].items():
        assert torch.equal(value, b["ema"]["module"][name]), f"EMA weight {name} differs after resume"
    assert a["metrics"] == b["metrics"]
    straight_log = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    resumed_log = (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    assert len(straight_log) == len(resumed_log)  # steps logged after the checkpoint were dropped, then redone


def test_resume_with_another_config_says_which_fields_differ(tmp_path):
    config = TrainConfig(model="train_toy_models:toy_bra", epochs=1, train_size=16, val_size=8, batch_size=8,
                         num_workers=0, out=str(tmp_path / "r"), progress=False)  # fmt: skip
    train(config)
    changed = TrainConfig(**{**config.to_dict(), "lr": 0.01, "batch_size": 4, "resume": True, "num_workers": 1})
    with pytest.raises(ValueError, match=r"another config:\n  batch_size: checkpoint 8, now 4\n  lr: checkpoint 0.001"):
        train(changed)


def test_a_checkpoint_of_another_model_names_the_differences(tmp_path):
    toy = build_model(TrainConfig(model="train_toy_models:toy_bra"), 2)
    wider = build_model(TrainConfig(model="train_toy_models:toy_bra", model_args={"dim": 32}), 2)
    with pytest.raises(
        ValueError, match=r"does not fit this model .*\n  shape of stem.weight: checkpoint \(16, 3, 4, 4\)"
    ):
        load_model_state(wider, toy.state_dict())
    del toy.head
    with pytest.raises(ValueError, match="missing in checkpoint: head.weight"):
        load_model_state(wider.__class__(), toy.state_dict())


def test_loading_is_weights_only_and_checks_the_format(tmp_path):
    from bralib.train.checkpoint import load_checkpoint

    save_checkpoint(tmp_path / "ok.pt", {"step": 3})
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3
    assert not (tmp_path / "ok.pt.tmp").exists()
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a bralib training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"format": "bralib.train.checkpoint/1", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_exported_weights_are_small_and_load_for_inference(tmp_path):
    from bralib.train import export_weights, load_trained_model

    out = tmp_path / "run"
    train(TrainConfig(model=MODEL, epochs=1, train_size=16, val_size=8, batch_size=8, num_workers=0, threads=1,
                      progress=False, out=str(out)))  # fmt: skip
    full = out / "checkpoint.pt"
    slim = export_weights(full, tmp_path / "slim.pt", dtype=torch.float16)
    assert slim["weights"] == "ema" and slim["step"] == 2
    assert all(v.dtype == torch.float16 for v in slim["model"].values() if v.is_floating_point())
    assert (tmp_path / "slim.pt").stat().st_size < 0.2 * full.stat().st_size  # one set of weights, half width
    model, config, info = load_trained_model(tmp_path / "slim.pt")
    reference, _, _ = load_trained_model(full)  # EMA weights in float32
    assert info["ema"] and info["step"] == 2 and config.model == MODEL
    assert all(p.dtype == torch.float32 for p in model.parameters())  # cast back on loading
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), atol=2e-2, rtol=2e-2)
    assert not {"optimizer", "rng"} & set(torch.load(tmp_path / "slim.pt", weights_only=True))  # cannot resume
