"""A whole BiFormer per backend: one training step and batch-1 inference, eager and ``torch.compile``.

Every variant is a copy of one freshly initialised model (same weights) whose
:class:`~bralib.ops.BiLevelRoutingAttention` modules all get the backend under test. The training step
is forward, cross-entropy, backward and an AdamW step; inference is ``eval()`` mode under ``no_grad``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F

from bralib.bench.measure import interleaved, record_timings, saved_bytes
from bralib.ops import BiLevelRoutingAttention
from bralib.ops.backends import BACKENDS

DEFAULT_MODEL_BACKENDS = ("gather", "sdpa", "lean", "dense", "auto")


def set_backend(model: torch.nn.Module, backend: str) -> int:
    """Give every BRA module of ``model`` the backend ``backend``; returns how many there are."""
    count = 0
    for module in model.modules():
        if isinstance(module, BiLevelRoutingAttention):
            module.backend = backend
            count += 1
    return count


def bench_model(
    model_name: str,
    backends: tuple[str, ...],
    *,
    device: torch.device,
    train_batch: int,
    image_size: int = 224,
    compile_modes: tuple[bool, ...] = (False,),
    repeats: int = 5,
    warmup: int = 1,
    progress: Any = None,
    model_overrides: dict[str, Any] | None = None,
    compile_backends: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Median ms of a training step (batch ``train_batch``) and of batch-1 inference, per backend and mode.

    ``compile_modes``: eager (False) and/or ``torch.compile`` (True). ``compile_backends``: the backends that
    get the compiled mode (default: all of ``backends``); the others run eager only.
    ``model_overrides`` go to :func:`bralib.create_model` (e.g. a smaller architecture for a quick check).
    """
    import bralib

    base = bralib.create_model(model_name, **(model_overrides or {})).to(device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(train_batch, 3, image_size, image_size, generator=gen).to(device)
    labels = torch.randint(0, 1000, (train_batch,), generator=gen).to(device)
    single = images[:1].clone()
    result: dict[str, Any] = {
        "model": model_name, "train_batch": train_batch, "image_size": image_size, "repeats": repeats,
        "threads": torch.get_num_threads(), "train_ms": {}, "infer_ms": {}, "train_cpu_ms": {}, "infer_cpu_ms": {},
        "train_ms_all": {}, "infer_ms_all": {}, "first_call_s": {}, "saved_bytes": {}, "skipped": {}, "errors": {},
    }  # fmt: skip
    tasks = {}
    for name in backends:
        if name != "auto" and BACKENDS[name].problem(device.type, torch.float32, needs_grad=False):
            result["skipped"][name] = BACKENDS[name].problem(device.type, torch.float32, needs_grad=False)
            continue
        trains = name == "auto" or BACKENDS[name].problem(device.type, torch.float32, needs_grad=True) is None
        if not trains:
            result["skipped"][f"{name} (train)"] = BACKENDS[name].problem(device.type, torch.float32, needs_grad=True)
        modes = [c for c in compile_modes if not c or compile_backends is None or name in compile_backends]
        for compiled in modes:
            label = f"{name}{' compiled' if compiled else ''}"
            train_model = copy.deepcopy(base)
            set_backend(train_model, name)
            infer_model = copy.deepcopy(train_model).eval()
            if trains:
                optimizer = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
                step = _train_step(torch.compile(train_model) if compiled else train_model, optimizer, images, labels)
                tasks[(label, "train")] = step
            tasks[(label, "infer")] = _infer(torch.compile(infer_model) if compiled else infer_model, single)
            if not compiled and trains:
                result["saved_bytes"][label] = _saved_bytes_of_step(train_model, images, labels)

    # The first call per variant compiles where torch.compile is on: timed separately, outside the rounds.
    for key, task in list(tasks.items()):
        start = time.perf_counter()
        try:
            task()
        except Exception as err:
            result["errors"][f"{key[0]} ({key[1]})"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            del tasks[key]
            continue
        result["first_call_s"][f"{key[0]} ({key[1]})"] = round(time.perf_counter() - start, 2)
    if progress is not None:
        progress.total = (progress.total or 0) + len(tasks) * (repeats + warmup)
        progress.set_description(f"{model_name} (whole model)")
    wall, cpu, errors = interleaved(tasks, device=device, repeats=repeats, warmup=warmup, progress=progress)
    record_timings(result, wall, cpu, errors, digits=3)
    return result


def _train_step(model, optimizer, images, labels):
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def _infer(model, image):
    def run() -> None:
        with torch.no_grad():
            model(image)

    return run


def _saved_bytes_of_step(model, images, labels) -> int:
    """Activation bytes the whole model saves for its backward (the training forward, eager; weights excluded)."""
    count, loss = saved_bytes(lambda: F.cross_entropy(model(images), labels), exclude=list(model.parameters()))
    del loss
    return count
