"""Two processes under torchrun (gloo, CPU) train together; one process then evaluates their checkpoint alike."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MODEL = "biformer_nano"


@pytest.mark.slow
def test_two_process_gloo_run_and_single_process_eval_agree(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    out = tmp_path / "ddp"
    train = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "bralib.train", "--model", MODEL, "--train-size", "64",
         "--val-size", "21", "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--threads", "1",
         "--device", "cpu", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["world_size"] == 2 and trained["steps"] == 4  # 64 images / (2 processes x 8)
    assert trained["images"] == 21  # an odd count: shards of 11 and 10, nothing padded or dropped

    evaluated = subprocess.run(
        [sys.executable, "-m", "bralib.cli", "eval", "--checkpoint", str(out / "checkpoint.pt"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    single = json.loads(evaluated.stdout)
    for key in ("top1", "top5", "images", "ema_top1", "ema_top5"):
        assert single[key] == trained[key], key
    for key in ("loss", "ema_loss"):
        assert single[key] == pytest.approx(trained[key], rel=1e-5), key
