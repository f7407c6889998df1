"""Every BRA backend on every stage shape: forward, forward+backward, saved activations, peak memory.

All backends see the same inputs and the same routing index (computed once per shape), so the timings
compare token attention only. Before timing, each backend's output (and gradients, where it has a
backward) is compared with ``"gather"``: a fast wrong answer is reported as such.
"""

from __future__ import annotations

from typing import Any

import torch

from bralib.bench.measure import cuda_peak_bytes, interleaved, record_timings, saved_bytes
from bralib.bench.shapes import StageShape
from bralib.ops import bra, route_regions
from bralib.ops.backends import BACKENDS

BASELINE = "gather"
DEFAULT_BACKENDS = ("gather", "sdpa", "lean", "dense", "flex")
CUDA_BACKENDS = (*DEFAULT_BACKENDS, "triton")  # triton runs on CPU only in its (slow) interpreter


def default_backends(device_type: str) -> tuple[str, ...]:
    """The backends ``bralib bench`` times when none are named."""
    return CUDA_BACKENDS if device_type == "cuda" else DEFAULT_BACKENDS


def make_inputs(shape: StageShape, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Random q, k, v leaves (requiring grad), their routing index and a random output gradient."""
    gen = torch.Generator().manual_seed(seed)
    size = (shape.batch, shape.height, shape.width, shape.dim)
    q, k, v = (torch.randn(size, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
    _, index = route_regions(q.detach(), k.detach(), n_win=shape.n_win, topk=shape.topk)
    grad_out = torch.randn(size, generator=gen).to(device, dtype)
    return q, k, v, index, grad_out


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| in float64."""
    ref64 = ref.detach().double()
    return float((got.detach().double() - ref64).norm() / ref64.norm().clamp_min(1e-30))


def bench_shape(
    shape: StageShape,
    backends: tuple[str, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
    backward: bool,
    progress: Any = None,
) -> dict[str, Any]:
    """Time and measure every backend on one shape; the dict is one entry of the bench JSON."""
    q, k, v, index, grad_out = make_inputs(shape, device, dtype)
    kwargs = dict(num_heads=shape.num_heads, n_win=shape.n_win, topk=shape.topk, routing_index=index)

    def forward(name: str) -> torch.Tensor:
        with torch.no_grad():
            return bra(q, k, v, backend=name, **kwargs)

    def train(name: str) -> tuple[torch.Tensor, ...]:
        out = bra(q, k, v, backend=name, **kwargs)
        return (out, *torch.autograd.grad(out, (q, k, v), grad_out))

    record: dict[str, Any] = {
        "label": shape.label, "batch": shape.batch, "height": shape.height, "width": shape.width,
        "c_qk": shape.dim, "c_v": shape.dim, "num_heads": shape.num_heads, "n_win": shape.n_win,
        "topk": shape.topk, "tokens": shape.tokens, "tokens_per_region": shape.tokens_per_region,
        "forward_ms": {}, "train_ms": {}, "forward_ms_all": {}, "train_ms_all": {}, "forward_cpu_ms": {},
        "train_cpu_ms": {}, "saved_bytes": {}, "saved_bytes_with_inputs": {}, "peak_bytes": {},
        "max_rel_error": {}, "skipped": {}, "errors": {},
    }  # fmt: skip
    tasks = {}
    for name in backends:
        problem = BACKENDS[name].problem(device.type, dtype, needs_grad=False)
        if problem is not None:
            record["skipped"][name] = problem
            continue
        tasks[(name, "forward")] = lambda name=name: forward(name)
        if backward:
            problem = BACKENDS[name].problem(device.type, dtype, needs_grad=True)
            if problem is None:
                tasks[(name, "train")] = lambda name=name: train(name)
            else:
                record["skipped"][f"{name} (forward+backward)"] = problem

    _check_against_baseline(record, tasks, forward, train)
    for key in [key for key in tasks if key[0] in record["errors"]]:
        del tasks[key]
    if progress is not None:
        progress.total = (progress.total or 0) + len(tasks) * (repeats + warmup)
        progress.set_description(shape.label)
    wall, cpu, errors = interleaved(tasks, device=device, repeats=repeats, warmup=warmup, progress=progress)
    record_timings(record, wall, cpu, errors, digits=4)
    for name, mode in wall:
        if mode == "train":
            _measure_memory(record, name, lambda name=name: bra(q, k, v, backend=name, **kwargs), (q, k, v), device)
            if device.type == "cuda":
                record["peak_bytes"][name] = cuda_peak_bytes(lambda name=name: train(name), device)
    return record


def _check_against_baseline(record: dict, tasks: dict, forward, train) -> None:
    """Compare each backend with the gather once (output, and gradients where there is a backward)."""
    baseline_train = train(BASELINE) if (BASELINE, "train") in tasks else None
    baseline_out = baseline_train[0] if baseline_train is not None else forward(BASELINE)
    for name, mode in list(tasks):
        try:
            if mode == "forward":
                error = relative_error(forward(name), baseline_out)
                record["max_rel_error"][name] = max(record["max_rel_error"].get(name, 0.0), error)
            elif baseline_train is not None:
                got = train(name)
                error = max(relative_error(g, r) for g, r in zip(got, baseline_train, strict=True))
                record["max_rel_error"][name] = max(record["max_rel_error"].get(name, 0.0), error)
        except Exception as err:  # reported in the table and the JSON
            record["errors"][name] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"


def _measure_memory(record: dict, name: str, run, inputs: tuple[torch.Tensor, ...], device: torch.device) -> None:
    own, out = saved_bytes(run, exclude=inputs)
    del out
    total, out = saved_bytes(run)
    del out
    record["saved_bytes"][name] = own
    record["saved_bytes_with_inputs"][name] = total
