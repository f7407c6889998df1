"""experiments/routing_ablation.py at a tiny size: JSON, paired intervals, float16 weights, skip and resume."""

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("routing_ablation", REPO / "experiments" / "routing_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_interval_by_hand():
    ablation = _module()
    ci = ablation.paired_ci({0: 100.0, 1: 90.0, 2: 95.0}, {0: 50.0, 1: 50.0, 2: 45.0})
    diffs = [50.0, 40.0, 50.0]
    sd = math.sqrt(sum((d - 140 / 3) ** 2 for d in diffs) / 2)
    assert ci["differences"] == diffs and ci["mean"] == pytest.approx(46.67, abs=0.01)
    assert ci["ci95"] == pytest.approx([140 / 3 - 4.303 * sd / math.sqrt(3), 140 / 3 + 4.303 * sd / math.sqrt(3)],
                                       abs=0.03)  # fmt: skip
    assert ablation.paired_ci({0: 1.0}, {0: 2.0}) is None  # one seed: no interval
    assert ablation.t_quantile_975(2) == 4.303 and abs(ablation.t_quantile_975(30) - 2.042) < 0.01


def test_tiny_run_writes_everything_and_skips_finished_runs(tmp_path, run_python):
    result, checkpoints = tmp_path / "result.json", tmp_path / "ck"
    args = [str(REPO / "experiments" / "routing_ablation.py"), "--arms", "bra", "local", "--seeds", "0", "1",
            "--epochs", "2", "--train-size", "64", "--val-size", "32", "--runs", str(tmp_path / "runs"),
            "--result", str(result), "--checkpoints", str(checkpoints)]  # fmt: skip
    process = run_python(*args, cwd=tmp_path, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    record = json.loads(result.read_text())
    assert {(r["arm"], r["seed"]) for r in record["runs"]} == {("bra", 0), ("bra", 1), ("local", 0), ("local", 1)}
    assert all(len(r["history"]) == 2 and set(r["final"]) == {"same", "colour"} for r in record["runs"])
    assert record["table"]["bra"]["same"]["n"] == 2
    ci = record["paired"]["bra - local: same"]
    finals = {(r["arm"], r["seed"]): r["final"]["same"] for r in record["runs"]}
    assert ci["differences"] == [round(finals[("bra", s)] - finals[("local", s)], 2) for s in (0, 1)]
    for arm in ("bra", "local"):
        path = checkpoints / f"isotropic_{arm}.pt"
        assert (checkpoints / f"isotropic_{arm}.pt.sha256").read_text().split()[0] == hashlib.sha256(
            path.read_bytes()).hexdigest()  # fmt: skip
    again = run_python(*args, cwd=tmp_path, timeout=300)  # every run finished: nothing is trained again
    assert again.returncode == 0 and "epoch" not in again.stderr
    assert json.loads(result.read_text())["runs"] == record["runs"]
