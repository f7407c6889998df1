"""Measuring: interleaved wall-clock timing, saved-activation bytes, CUDA peak memory, machine load.

Timing follows one rule: every variant is timed in the same process, round after round, in a rotating
order, so that whatever else loads the machine (other users, thermal state, the allocator's state) hits
all variants alike; the summary is the median over rounds, after warm-up rounds that absorb one-off costs
(compilation, first-touch page faults, kernel selection).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call; on CUDA the wall time is measured with device events."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        cpu0 = time.process_time()
        start.record()
        fn()
        end.record()
        synchronize(device)
        return start.elapsed_time(end), (time.process_time() - cpu0) * 1e3
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn()
    return (time.perf_counter() - wall0) * 1e3, (time.process_time() - cpu0) * 1e3


def interleaved(
    tasks: dict[Any, Callable[[], Any]],
    *,
    device: torch.device,
    repeats: int,
    warmup: int,
    progress: Any = None,
) -> tuple[dict[Any, list[float]], dict[Any, list[float]], dict[Any, str]]:
    """Time every task ``repeats`` times, round-robin with a rotating order, after ``warmup`` rounds.

    Returns (wall ms per task, CPU ms per task, error per task that raised; those are dropped).
    """
    errors: dict[Any, str] = {}
    live = list(tasks)
    for _ in range(warmup):
        for key in list(live):
            try:
                tasks[key]()
            except Exception as err:  # a backend that cannot run a shape is reported, not fatal
                errors[key] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                live.remove(key)
            if progress is not None:
                progress.update()
    wall: dict[Any, list[float]] = {key: [] for key in live}
    cpu: dict[Any, list[float]] = {key: [] for key in live}
    for round_number in range(repeats):
        shift = round_number % max(len(live), 1)
        for key in live[shift:] + live[:shift]:
            w, c = time_call(tasks[key], device)
            wall[key].append(w)
            cpu[key].append(c)
            if progress is not None:
                progress.update()
    return wall, cpu, errors


def median(values: list[float]) -> float:
    return statistics.median(values)


def record_timings(record: dict[str, Any], wall: dict, cpu: dict, errors: dict, digits: int) -> None:
    """Store what :func:`interleaved` measured in a bench record, per (name, mode): the median wall time,
    every round, the median process CPU time, and the error of a variant that failed."""
    for (name, mode), message in errors.items():
        record["errors"][f"{name} ({mode})"] = message
    for (name, mode), times in wall.items():
        record[f"{mode}_ms"][name] = round(median(times), digits)
        record[f"{mode}_ms_all"][name] = [round(t, digits) for t in times]
        record[f"{mode}_cpu_ms"][name] = round(median(cpu[(name, mode)]), digits)


def saved_bytes(run: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> tuple[int, Any]:
    """Bytes of the distinct storages autograd saves for the backward while ``run()`` executes.

    Deterministic (it counts what is saved, not what an allocator happens to hold). Tensors sharing a
    storage (views, slices) count once, at their storage's full size. Storages of ``exclude`` (the inputs,
    which the caller holds anyway) are not counted. Returns (bytes, what ``run`` returned) — keep the
    result alive until the count is read, since freeing it frees the graph.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return sum(seen.values()), result


def cuda_peak_bytes(run: Callable[[], Any], device: torch.device) -> int:
    """Peak CUDA memory allocated by ``run()`` above what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    triton = sys.modules.get("triton")  # the triton backend's kernels: recorded where they were used
    if triton is not None:
        info["triton"] = getattr(triton, "__version__", "unknown")
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (how busy the machine was), None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
