"""Without the [export] extra: bralib imports and builds models; exporting says what to install."""

from __future__ import annotations

import sys

import pytest
import torch

import bralib
import bralib.export
from bralib.export.deps import EXPORT_PACKAGES, MissingExportPackage, require


@pytest.fixture
def without_export_packages(monkeypatch):
    """Make every [export] package unimportable (None in sys.modules blocks an import)."""
    for name in list(sys.modules):
        if name.split(".")[0] in EXPORT_PACKAGES:
            monkeypatch.delitem(sys.modules, name)
    for name in (*EXPORT_PACKAGES, "safetensors.torch"):
        monkeypatch.setitem(sys.modules, name, None)


def test_a_missing_package_says_what_to_install(without_export_packages, tmp_path):
    with pytest.raises(MissingExportPackage, match=r"needs the package 'onnxruntime'.*pip install 'bralib\[export\]'"):
        require("onnxruntime", "checking an ONNX file")
    model = bralib.create_model("biformer_nano", num_classes=10)  # the library itself needs none of them
    with pytest.raises(MissingExportPackage, match=r"writing safetensors needs the package 'safetensors'"):
        bralib.export.save_safetensors(model, tmp_path / "nano.safetensors")
    with pytest.raises(MissingExportPackage, match=r"ONNX export needs the package 'onnx'"):
        bralib.export.export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "nano.onnx")
    assert not list(tmp_path.iterdir())


def test_bralib_imports_without_the_export_packages(run_python, repo_root):
    blocker = (
        "import sys; [sys.modules.__setitem__(n, None) for n in ('onnx', 'onnxruntime', 'onnxscript', 'safetensors')]"
    )
    code = f"{blocker}; import bralib, bralib.export, bralib.cli; bralib.cli.build_parser(); print('ok')"
    result = run_python("-c", code, cwd=repo_root)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
