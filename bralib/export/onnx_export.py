"""ONNX export of BiFormer and of BRA layers (``torch.onnx.export(..., dynamo=True)``), checked with onnxruntime.

The exporter traces the module with ``torch.export`` (``program.py``) and translates the ATen graph to ONNX
(opset 18 and up). Routing becomes ``ReduceMean`` (region means), ``MatMul`` (region adjacency) and ``TopK``
whose k is a constant initializer (:func:`topk_values` reads them back: an ONNX consumer such as TensorRT,
whose TopK needs a constant k, gets one); the gathers become ``Gather`` on flattened indices.

Files are self-contained (weights inside, no ``.onnx.data`` beside them): BiFormer-B is 0.23 GB, far below
ONNX's 2 GB limit for one file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bralib.export.deps import require
from bralib.export.program import EXPORT_BACKEND, _flat, as_args, batch_dims, export_backend, other_batch

TOLERANCE = 1e-4  # largest |onnxruntime - PyTorch| / largest |PyTorch| accepted in float32


def export_onnx(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    backend: str = EXPORT_BACKEND,
    opset: int | None = None,
    dynamic_batch: bool = False,
    quiet: bool = True,
) -> Path:
    """Write ``module`` (eval mode, for the shape of ``example``) to the ONNX file ``path``; returns the path.

    Args:
        module: a BiFormer (input (B, 3, H, W)) or a :class:`~bralib.ops.BiLevelRoutingAttention` (input
            (B, H, W, C)), or any module built from them.
        example: the input (one tensor or a tuple); its shape is baked into the graph (but for the batch size,
            with ``dynamic_batch``).
        backend: the BRA backend traced (see ``program.EXPORTABLE_BACKENDS``).
        opset: ONNX opset; None lets the exporter choose (18 for torch 2.13).
        dynamic_batch: make dim 0 of the inputs and outputs a symbolic batch size.
        quiet: hide the exporter's progress lines.
    """
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    args, dynamic_shapes = batch_dims(example, dynamic_batch)
    silence = _silenced() if quiet else contextlib.nullcontext()
    with torch.no_grad(), export_backend(module, backend), silence:
        torch.onnx.export(module, args, path, dynamo=True, external_data=False, opset_version=opset, verbose=False,
                          dynamic_shapes=dynamic_shapes)  # fmt: skip
    return path


@contextlib.contextmanager
def _silenced():
    """Hide the exporter's progress prints, its warnings about torchvision's operators (not used here) and a
    deprecation warning torch raises inside its own exporter."""
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)  # torch's own pytree
            yield
    finally:
        registry.setLevel(level)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, None for onnxruntime's default)."""
    ort = require("onnxruntime", "running an ONNX file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, example: torch.Tensor | tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """The outputs of an onnxruntime session for ``example`` (tensors, in the order of the session's inputs)."""
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: t.numpy() for name, t in zip(names, as_args(example), strict=True)})


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference over the largest absolute reference value (0 for two zero arrays)."""
    scale = float(np.abs(expected).max())
    return float(np.abs(got - expected).max()) / scale if scale > 0 else float(np.abs(got).max())


def onnx_parity(
    path: str | os.PathLike,
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    backend: str = EXPORT_BACKEND,
) -> float:
    """Relative error (:func:`relative_error`, worst output) of onnxruntime on ``path`` against ``module``."""
    module.eval()
    with torch.no_grad(), export_backend(module, backend):
        expected = [t.numpy() for t in _flat(module(*as_args(example)))]
    got = run_onnx(onnx_session(path), example)
    if len(got) != len(expected):
        raise ValueError(f"{str(path)!r} has {len(got)} outputs but the module returns {len(expected)}")
    return max(relative_error(g, e) for g, e in zip(got, expected, strict=True))


def topk_values(path: str | os.PathLike) -> list[int]:
    """The k of every ``TopK`` node of an ONNX file, in graph order; raises if one is computed at run time."""
    onnx = require("onnx", "reading an ONNX file")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value.t)
    ks = []
    for node in model.graph.node:
        if node.op_type != "TopK":
            continue
        if node.input[1] not in constants:
            raise ValueError(f"TopK node {node.name!r} of {str(path)!r} computes its k at run time ({node.input[1]!r})")
        ks.append(int(np.asarray(constants[node.input[1]]).reshape(-1)[0]))
    return ks


def export_onnx_checked(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    backend: str = EXPORT_BACKEND,
    dynamic_batch: bool = False,
    tolerance: float = TOLERANCE,
) -> dict:
    """Export, then check with onnxruntime; raises when the relative error exceeds ``tolerance``.

    With ``dynamic_batch`` a second, larger batch of new inputs is checked too. Returns a record: path, bytes,
    export seconds, the batch sizes checked, the worst relative error, the TopK constants, the backend.
    """
    start = time.perf_counter()
    export_onnx(module, example, path, backend=backend, dynamic_batch=dynamic_batch)
    seconds = time.perf_counter() - start
    examples = [as_args(example)] + ([other_batch(example)] if dynamic_batch else [])
    error = max(onnx_parity(path, module, args, backend=backend) for args in examples)
    if not error <= tolerance:
        raise RuntimeError(
            f"{str(path)!r}: onnxruntime differs from PyTorch by {error:.3g} (relative), more than {tolerance:g}"
        )
    return {"path": str(path), "bytes": Path(path).stat().st_size, "export_s": round(seconds, 2),
            "batch_sizes": [args[0].shape[0] for args in examples], "relative_error": error,
            "topk": topk_values(path), "backend": backend}  # fmt: skip
