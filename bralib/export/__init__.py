"""Taking BiFormer elsewhere: ONNX files, ``torch.export`` programs, safetensors weights, and ``bralib predict``.

=================== ===========================================================================================
``onnx_export``     :func:`export_onnx` (``torch.onnx.export(..., dynamo=True)``), checked with onnxruntime
``program``         :func:`export_program`, :func:`save_program`, :func:`load_program` (``torch.export``)
``safetensors_io``  :func:`save_safetensors` / :func:`load_safetensors`, with a SHA-256 file beside
``convert``         official ``.pth`` (strict) or training checkpoints -> safetensors (``bralib convert``)
``predict``         top-k and the routing figure of image files (``bralib predict``)
=================== ===========================================================================================

**Which BRA backend exports.** Every layer is traced with one fixed backend (default :data:`EXPORT_BACKEND`,
``"gather"``). ``gather``, ``sdpa``, ``lean``, ``reference`` and ``dense`` are plain ATen operators
(``topk``, ``index_select``, ``matmul``, ``softmax``, ``scaled_dot_product_attention``), so both
``torch.export`` and the ONNX translation take them, and onnxruntime matches PyTorch to ~2e-7 (relative).
Under onnxruntime ``gather``, ``sdpa`` and ``lean`` are equally fast and ``dense`` and ``reference``, which build
the full (HW)x(HW) mask, are ~40 times slower (BiFormer-T's stage-1 layer, one thread, CPU ms: gather 3.9,
sdpa 3.9, lean 4.1, reference 142, dense 191; ``benchmarks/export_cpu.json``). Two backends do not export to
ONNX. ``flex``: ``torch.export`` traces it (without gradients) into PyTorch's FlexAttention operator, which has
no ONNX translation. ``triton``: a custom operator (``bralib::triton_routed_attention``, ``torch.library``) that
``torch.export`` keeps opaque (the program then needs bralib, triton and, outside Triton's interpreter, CUDA)
and ONNX cannot translate. ``auto`` is not used for export: it decides per shape from eager timings, and inside
``torch.export`` (where ``torch.compiler.is_compiling()`` is true) it may choose ``flex``. ``topk`` is a
Python integer of each layer, so every ONNX ``TopK`` gets a constant k (:func:`topk_values` checks it), as
TensorRT requires.

The exporters need the ``[export]`` extra (``pip install 'bralib[export]'``: onnx, onnxruntime, onnxscript,
safetensors); ``import bralib`` does not, and a missing package raises an error saying what to install.
"""

from __future__ import annotations

import importlib
from typing import Any

# Backends whose graph torch.export traces and the ONNX exporter translates, fastest under onnxruntime first
# (benchmarks/export_cpu.json). Here, not in program.py, so the CLI's --help needs no torch import.
EXPORTABLE_BACKENDS = ("gather", "sdpa", "lean", "reference", "dense")
EXPORT_BACKEND = "gather"

_EXPORTS: dict[str, str] = {
    "export_onnx": "bralib.export.onnx_export",
    "export_onnx_checked": "bralib.export.onnx_export",
    "onnx_parity": "bralib.export.onnx_export",
    "onnx_session": "bralib.export.onnx_export",
    "topk_values": "bralib.export.onnx_export",
    "export_backend": "bralib.export.program",
    "export_program": "bralib.export.program",
    "export_program_file": "bralib.export.program",
    "image_batch": "bralib.export.program",
    "load_program": "bralib.export.program",
    "save_program": "bralib.export.program",
    "Preprocess": "bralib.export.safetensors_io",
    "load_safetensors": "bralib.export.safetensors_io",
    "load_safetensors_into": "bralib.export.safetensors_io",
    "save_safetensors": "bralib.export.safetensors_io",
    "convert_official": "bralib.export.convert",
    "convert_trained": "bralib.export.convert",
    "load_predictor": "bralib.export.predict",
    "predict": "bralib.export.predict",
    "routing_figure": "bralib.export.predict",
}

__all__ = sorted([*_EXPORTS, "EXPORTABLE_BACKENDS", "EXPORT_BACKEND"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bralib.export' has no attribute {name!r}; available: {__all__}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
