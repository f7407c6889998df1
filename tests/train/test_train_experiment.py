"""experiments/bra_vs_local.py runs end to end at a tiny size and writes what chapters 7 and 8 read."""

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bra_vs_local_writes_result_and_checkpoint(tmp_path, run_python):
    result, checkpoint = tmp_path / "result.json", tmp_path / "nano.pt"
    process = run_python(
        str(REPO / "experiments" / "bra_vs_local.py"), "--epochs", "1", "--pretrain-epochs", "1",
        "--train-size", "32", "--val-size", "16", "--batch-size", "16", "--runs", str(tmp_path / "runs"),
        "--result", str(result), "--checkpoint", str(checkpoint), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    record = json.loads(result.read_text())
    assert set(record["runs"]) == {"pretrain_cue", "content", "local"}
    content, local = record["runs"]["content"], record["runs"]["local"]
    assert content["config"]["routing"] == "content" and local["config"]["routing"] == "local"
    assert content["config"]["init"] == local["config"]["init"] is not None  # both from the shared pretraining
    assert 1 < content["flops_per_image"] / local["flops_per_image"] < 1.01  # same attention; routing adds < 1 %
    assert record["gap_top1"] == round(content["top1"] - local["top1"], 2)
    assert "experiments/bra_vs_local.py --epochs 1" in record["command"]
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["checkpoint"]["sha256"] == digest
    assert (tmp_path / "nano.pt.sha256").read_text().split() == [digest, "nano.pt"]
