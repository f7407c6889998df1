"""ONNX export of BRA layers and BiFormer, checked with onnxruntime on CPU (relative error <= 1e-4, float32)."""

from __future__ import annotations

import pytest
import torch

import bralib
from bralib.export.onnx_export import TOLERANCE, export_onnx_checked, onnx_parity
from bralib.ops import BiLevelRoutingAttention

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _block_topks(model) -> list[int]:
    """The topk of every BRA block, in network order (the order of the ONNX graph's TopK nodes)."""
    return [block.attn.topk for stage in model.stages for block in stage.blocks if block.routes]


@pytest.mark.parametrize(("size", "route_from"), [(56, "qk"), (28, "x")])
def test_bra_layer_matches_onnxruntime_with_a_constant_topk(tmp_path, size, route_from):
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(64, 2, n_win=7, topk=4, scale_mode="official", route_from=route_from)
    record = export_onnx_checked(layer, _tokens(1, size, size, 64), tmp_path / "bra.onnx")
    assert record["relative_error"] <= TOLERANCE
    assert record["topk"] == [4]  # TopK's k is an initializer, not computed at run time
    assert record["backend"] == "gather" and layer.backend == "auto"  # the layer's own backend is restored


def test_dynamic_batch_runs_any_batch_size(tmp_path):
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, 2, n_win=4, topk=2)
    record = export_onnx_checked(layer, _tokens(1, 16, 16, 32), tmp_path / "bra.onnx", dynamic_batch=True)
    assert record["batch_sizes"] == [1, 3] and record["relative_error"] <= TOLERANCE
    x = _tokens(5, 16, 16, 32)
    assert onnx_parity(tmp_path / "bra.onnx", layer, x) <= TOLERANCE


def test_onnx_parity_notices_different_weights(tmp_path):
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, 2, n_win=4, topk=2)
    x = _tokens(1, 16, 16, 32)
    export_onnx_checked(layer, x, tmp_path / "bra.onnx")
    with torch.no_grad():
        layer.proj.weight.mul_(1.01)
    assert onnx_parity(tmp_path / "bra.onnx", layer, x) > 1e-3


def _check_model(name: str, size: int, tmp_path) -> None:
    torch.manual_seed(0)
    model = bralib.create_model(name).eval()
    record = export_onnx_checked(model, _tokens(1, 3, size, size), tmp_path / f"{name}.onnx")
    assert record["relative_error"] <= TOLERANCE, record
    assert record["topk"] == _block_topks(model)  # T: [1, 1, 4, 4, 16 x 8], every one a constant


@pytest.mark.parametrize("size", [224, 112])  # 13-17 s each on one core
def test_biformer_tiny_matches_onnxruntime(tmp_path, size):
    _check_model("biformer_tiny", size, tmp_path)


@pytest.mark.slow  # 40-50 s each
@pytest.mark.parametrize(("name", "size"), [("biformer_small", 224), ("biformer_small", 112), ("biformer_base", 224)])
def test_biformer_matches_onnxruntime(tmp_path, name, size):
    _check_model(name, size, tmp_path)
