"""torch.export programs: saved, loaded back, same outputs; the export switch restores the layers' backends."""

from __future__ import annotations

import json

import pytest
import torch

import bralib
from bralib.cli import main
from bralib.export.program import export_backend, export_program_file, load_program
from bralib.ops import BiLevelRoutingAttention
from bralib.train import load_trained_model


def test_bra_layer_program_round_trip(tmp_path):
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, 2, n_win=4, topk=3).eval()
    x = torch.randn(2, 16, 16, 32)
    record = export_program_file(layer, x, tmp_path / "bra.pt2")
    assert record["max_abs_difference"] == 0.0
    program = load_program(tmp_path / "bra.pt2")
    topks = [n for n in program.graph.nodes if n.target == torch.ops.aten.topk.default]
    assert [n.args[1] for n in topks] == [3]  # k is a Python int in the graph, not a tensor
    with torch.no_grad(), export_backend(layer, "gather"):  # the backend the program was traced with
        other = torch.randn(2, 16, 16, 32)
        assert torch.equal(program.module()(other), layer(other))  # a new input, not just the traced one


def test_dynamic_batch_program_takes_other_batch_sizes(tmp_path):
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, 2, n_win=4, topk=3).eval()
    record = export_program_file(layer, torch.randn(1, 16, 16, 32), tmp_path / "bra.pt2", dynamic_batch=True)
    assert record["batch_sizes"] == [1, 3] and record["max_abs_difference"] == 0.0


def test_export_backend_switches_and_restores():
    model = bralib.create_model("biformer_nano", backend="sdpa")
    with export_backend(model, "gather") as count:
        assert count == 4 and {m.backend for m in model.modules() if isinstance(m, BiLevelRoutingAttention)} == {
            "gather"
        }
    assert {m.backend for m in model.modules() if isinstance(m, BiLevelRoutingAttention)} == {"sdpa"}
    with pytest.raises(ValueError, match="backend must be one of"), export_backend(model, "fast"):
        pass


def test_cli_exports_the_committed_checkpoint_as_a_program(tmp_path, repo_root, capsys):
    checkpoint = repo_root / "experiments" / "checkpoints" / "biformer_nano_digits.pt"
    out = tmp_path / "nano.pt2"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torch-export", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["max_abs_difference"] == 0.0 and record["input_shape"] == [1, 3, 64, 64]
    model, _, _ = load_trained_model(checkpoint)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_program(out).module()(images), model(images), rtol=0, atol=1e-5)


def test_cli_refuses_a_model_that_contradicts_the_checkpoint(repo_root, tmp_path, capsys):
    checkpoint = repo_root / "experiments" / "checkpoints" / "biformer_nano_digits.pt"
    argv = ["export", "--checkpoint", str(checkpoint), "--model", "biformer_tiny", "--format", "onnx",
            "--out", str(tmp_path / "x.onnx")]  # fmt: skip
    assert main(argv) == 2
    assert "does not match" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
