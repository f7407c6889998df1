"""``torch.export`` programs of BiFormer and of BRA layers: traced once, saved as ``.pt2``, loaded without bralib.

A program is the model's forward as a graph of ATen operators with its weights, for one input shape; it runs
with ``torch.export.load(path).module()(x)`` and is what the ONNX exporter translates (``onnx_export.py``).

Which BRA backend a program holds: every BRA layer is traced with ``EXPORT_BACKEND`` (see
:func:`export_backend`), not ``"auto"``; the package docstring says which backends export and why.
``topk`` stays a Python integer: the traced ``torch.topk`` has a constant k.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from bralib.export import EXPORT_BACKEND, EXPORTABLE_BACKENDS
from bralib.ops import BiLevelRoutingAttention
from bralib.ops.backends import BACKENDS

__all__ = ["EXPORTABLE_BACKENDS", "EXPORT_BACKEND", "export_backend", "export_program", "load_program", "save_program"]


@contextmanager
def export_backend(module: nn.Module, backend: str = EXPORT_BACKEND) -> Iterator[int]:
    """Give every BRA layer of ``module`` the backend ``backend`` for the duration; yields how many there are."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    layers = [m for m in module.modules() if isinstance(m, BiLevelRoutingAttention)]
    before = [layer.backend for layer in layers]
    for layer in layers:
        layer.backend = backend
    try:
        yield len(layers)
    finally:
        for layer, old in zip(layers, before, strict=True):
            layer.backend = old


def image_batch(model: nn.Module, image_size: int | None = None, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """A seeded (batch_size, in_chans, S, S) input for ``model``; S defaults to its config's input size."""
    config = getattr(model, "config", None)
    size = image_size if image_size is not None else getattr(config, "input_size", 224)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {size!r}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, getattr(model, "in_chans", 3), size, size, generator=generator)


def as_args(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return example if isinstance(example, tuple) else (example,)


def batch_dims(
    example: torch.Tensor | tuple[torch.Tensor, ...], dynamic_batch: bool
) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...] | None]:
    """(example arguments, dynamic_shapes) for ``torch.export``: with ``dynamic_batch``, dim 0 of every input is
    one symbolic batch size; a batch of 1 is traced as 2 (torch.export would otherwise fix a size-1 dim to 1)."""
    args = as_args(example)
    if not dynamic_batch:
        return args, None
    args = tuple(t.expand(2, *t.shape[1:]).contiguous() if t.shape[0] == 1 else t for t in args)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return args, tuple({0: batch} for _ in args)


def export_program(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    backend: str = EXPORT_BACKEND,
    dynamic_batch: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``module`` in eval mode for the shape of ``example`` (one tensor or a tuple).

    The module is put in eval mode (BatchNorm uses its running statistics, drop-path is off) and traced
    without gradients, its BRA layers on ``backend``; their backends are restored afterwards. The image size is
    fixed; with ``dynamic_batch`` the batch size is not.
    """
    module.eval()
    args, dynamic_shapes = batch_dims(example, dynamic_batch)
    with torch.no_grad(), export_backend(module, backend):
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes)


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """Write ``program`` to ``path`` (a ``.pt2`` archive, ``torch.export.save``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return path


def load_program(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """Read a ``.pt2`` program; ``load_program(p).module()(x)`` runs it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no exported program at {str(path)!r} (write one with: bralib export --format torch-export)"
        )
    with warnings.catch_warnings():  # torch 2.13's own pytree deprecation, raised while unpickling the program
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        return torch.export.load(path)


def export_program_file(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    *,
    backend: str = EXPORT_BACKEND,
    dynamic_batch: bool = False,
) -> dict:
    """Export, save and load back ``module``; checks the loaded program gives the module's outputs exactly.

    Returns a record: path, bytes, export seconds, the batch sizes checked and the largest absolute difference
    (0.0 expected: the program runs the same ATen operators in the same order). With ``dynamic_batch`` a second,
    larger batch of new inputs is checked too.
    """
    start = time.perf_counter()
    program = export_program(module, example, backend=backend, dynamic_batch=dynamic_batch)
    save_program(program, path)
    seconds = time.perf_counter() - start
    loaded = load_program(path).module()
    examples = [as_args(example)] + ([other_batch(example)] if dynamic_batch else [])
    difference = 0.0
    with torch.no_grad(), export_backend(module, backend):
        for args in examples:
            pairs = zip(_flat(loaded(*args)), _flat(module(*args)), strict=True)
            difference = max([difference, *((a - b).abs().max().item() for a, b in pairs)])
    return {"path": str(path), "bytes": Path(path).stat().st_size, "export_s": round(seconds, 2),
            "backend": backend, "batch_sizes": [args[0].shape[0] for args in examples],
            "max_abs_difference": difference}  # fmt: skip


def other_batch(example: torch.Tensor | tuple[torch.Tensor, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    """New random inputs shaped like ``example`` but with 2 more images: checks a dynamic batch size."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(t.shape[0] + 2, *t.shape[1:], generator=generator, dtype=t.dtype) for t in as_args(example)
    )


def _flat(output: torch.Tensor | list | tuple) -> list[torch.Tensor]:
    return list(output) if isinstance(output, list | tuple) else [output]
