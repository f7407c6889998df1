"""Export of BiFormer-T on this CPU: what exports, export times, file sizes, onnxruntime vs PyTorch latency, and
the memory that gradient checkpointing saves at 448x448. Writes ``benchmarks/export_cpu.json``.

    OMP_NUM_THREADS=1 python benchmarks/export_bench.py            # about 5 minutes on 2 shared cores

Latency: batch 1, 224x224, float32, one thread each (``torch.set_num_threads(1)``, onnxruntime with one
intra-op thread), every variant timed in the same process, round after round in a rotating order
(:func:`bralib.bench.measure.interleaved`), median over the rounds. Memory: each variant in a fresh process,
forward + backward of BiFormer-T at batch 1, 448x448; the peak resident memory (``VmHWM``) above the resident
memory just before the step (glibc told to return every freed block of 64 KiB or more, so that resident memory
follows live memory), and the bytes autograd saved for the backward (:func:`bralib.bench.measure.saved_bytes`),
with the backend ``auto`` picks for training on this CPU and with ``gather``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import bralib
from bralib.bench.measure import interleaved, load_average, machine, median
from bralib.export.onnx_export import export_onnx, export_onnx_checked, onnx_parity, onnx_session, run_onnx
from bralib.export.program import export_program, export_program_file
from bralib.export.safetensors_io import load_safetensors, save_safetensors
from bralib.ops import BiLevelRoutingAttention
from bralib.ops.backends import BACKENDS

OUT = Path(__file__).with_name("export_cpu.json")
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "safetensors")

# One process of the memory measurement: prints {"rss_before", "peak", "saved_bytes", "seconds"} as JSON.
MEMORY_CHILD = """
import json, resource, sys, time
import torch, bralib
from bralib.bench.measure import saved_bytes
torch.set_num_threads(1)
size, checkpointing, backend = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
torch.manual_seed(0)
model = bralib.create_model("biformer_tiny", backend=backend).train()
model.set_grad_checkpointing(checkpointing)
images = torch.randn(1, 3, size, size)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = rss()
start = time.perf_counter()
model(images).logsumexp(-1).sum().backward()
seconds = time.perf_counter() - start
with open("/proc/self/status") as f:  # VmHWM: this process image's peak; ru_maxrss would include the parent's
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
model.zero_grad(set_to_none=True)
saved, loss = saved_bytes(lambda: model(images).sum())
print(json.dumps({"rss_before": before, "peak": peak, "saved_bytes": saved, "seconds": seconds}))
"""


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def backend_matrix(work: Path, repeats: int, warmup: int) -> dict[str, dict]:
    """Which backends a BRA layer of BiFormer-T's stage 1 (56x56 tokens, 64 channels, 2 heads, k = 1) exports with,
    and how fast onnxruntime (one thread) runs each exported graph."""
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(64, 2, n_win=7, topk=1, scale_mode="official", route_from="qk").eval()
    x = torch.randn(1, 56, 56, 64)
    rows, sessions = {}, {}
    for name in BACKENDS:
        row: dict = {}
        try:
            export_program(layer, x, backend=name)
            row["torch_export"] = "ok"
        except Exception as err:  # recorded: this is the point of the table
            row["torch_export"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        try:
            export_onnx(layer, x, work / f"layer_{name}.onnx", backend=name)
            row["onnx"] = "ok"
            row["relative_error"] = onnx_parity(work / f"layer_{name}.onnx", layer, x, backend=name)
            sessions[name] = onnx_session(work / f"layer_{name}.onnx", threads=1)
        except Exception as err:
            row["onnx"] = f"{type(err).__name__}: {_first_summary_line(err)}"
        rows[name] = row
        print(f"  {name:10s} torch.export {row['torch_export'][:60]:60s} onnx {row['onnx'][:80]}", flush=True)
    tasks = {name: (lambda s=session: run_onnx(s, x)) for name, session in sessions.items()}
    wall, cpu, _ = interleaved(tasks, device=torch.device("cpu"), repeats=repeats, warmup=warmup)
    for name in tasks:
        rows[name]["onnxruntime_ms"] = round(median(wall[name]), 3)
        rows[name]["onnxruntime_cpu_ms"] = round(median(cpu[name]), 3)
    return rows


def _first_summary_line(err: Exception) -> str:
    """The exporter's errors are pages long: the line after its 'Exception summary', or the first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "Exception summary" in line and i + 1 < len(lines):
            return lines[i + 1][:300]
    return lines[0][:300] if lines else type(err).__name__


def files_of_tiny(work: Path) -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(0)
    model = bralib.create_model("biformer_tiny").eval()
    x = torch.randn(1, 3, 224, 224)
    files = {"onnx": export_onnx_checked(model, x, work / "tiny.onnx")}
    print(f"  onnx: {files['onnx']['export_s']} s, {files['onnx']['bytes'] / 1e6:.1f} MB", flush=True)
    files["torch_export"] = export_program_file(model, x, work / "tiny.pt2")
    print(f"  torch.export: {files['torch_export']['export_s']} s", flush=True)
    start = time.perf_counter()
    save_safetensors(model, work / "tiny.safetensors")
    saved = time.perf_counter() - start
    start = time.perf_counter()
    loaded, _ = load_safetensors(work / "tiny.safetensors")
    files["safetensors"] = {"bytes": (work / "tiny.safetensors").stat().st_size, "save_s": round(saved, 3),
                            "load_s": round(time.perf_counter() - start, 3),
                            "bit_exact": all(torch.equal(a, b) for a, b in zip(
                                model.state_dict().values(), loaded.state_dict().values(), strict=True))}  # fmt: skip
    files["parameters"] = sum(p.numel() for p in model.parameters())
    for record in files.values():
        if isinstance(record, dict):
            record.pop("path", None)
    return files, model


def latency(model: torch.nn.Module, work: Path, repeats: int, warmup: int) -> dict:
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 224, 224)
    session = onnx_session(work / "tiny.onnx", threads=1)
    gather_model = bralib.create_model("biformer_tiny", backend="gather").eval()
    gather_model.load_state_dict(model.state_dict())

    def eager(m):
        def run():
            with torch.no_grad():
                m(x)

        return run

    tasks = {"onnxruntime (gather graph)": lambda: run_onnx(session, x), "pytorch eager, backend auto": eager(model),
             "pytorch eager, backend gather": eager(gather_model)}  # fmt: skip
    wall, cpu, errors = interleaved(tasks, device=torch.device("cpu"), repeats=repeats, warmup=warmup)
    return {"median_ms": {k: round(median(v), 2) for k, v in wall.items()},
            "median_cpu_ms": {k: round(median(v), 2) for k, v in cpu.items()},
            "all_ms": {k: [round(t, 2) for t in v] for k, v in wall.items()}, "errors": errors,
            "repeats": repeats, "warmup": warmup, "threads": 1, "batch": 1, "image_size": 224}  # fmt: skip


def memory(size: int, rounds: int, backend: str) -> dict:
    """Plain and checkpointed forward + backward, each in fresh processes, alternating."""
    # glibc keeps freed blocks below its mmap threshold in the heap, so RSS would remember every transient; with
    # this threshold every allocation of 64 KiB or more is returned to the system when freed: RSS ~ live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    runs: dict[str, list] = {"plain": [], "checkpointed": []}
    for _ in range(rounds):  # alternate, so machine load hits both alike
        for name, flag in (("plain", "0"), ("checkpointed", "1")):
            command = [sys.executable, "-c", MEMORY_CHILD, str(size), flag, backend]
            result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  {backend} {name}: {runs[name][-1]}", flush=True)
    summary = {}
    for name, records in runs.items():
        peak = median([r["peak"] - r["rss_before"] for r in records])
        summary[name] = {"peak_above_start_mb": round(peak / 2**20, 1),
                         "saved_activations_mb": round(records[0]["saved_bytes"] / 2**20, 1),
                         "forward_backward_s": round(median([r["seconds"] for r in records]), 2)}  # fmt: skip
    plain, ckpt = summary["plain"], summary["checkpointed"]
    summary["peak_saved_mb"] = round(plain["peak_above_start_mb"] - ckpt["peak_above_start_mb"], 1)
    summary["peak_ratio"] = round(ckpt["peak_above_start_mb"] / plain["peak_above_start_mb"], 3)
    summary.update({"model": "biformer_tiny", "image_size": size, "batch": 1, "backend": backend, "rounds": rounds,
                    "malloc_mmap_threshold": 65536, "runs": runs,
                    "note": "forward_backward_s: one cold step per process, every large allocation a fresh mmap "
                            "(page faults): not a speed measurement"})  # fmt: skip
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds of the latency comparison")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory-size", type=int, default=448)
    parser.add_argument("--memory-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"kind": "bralib export benchmark", "date": now,
              "command": "OMP_NUM_THREADS=1 python benchmarks/export_bench.py " + " ".join(sys.argv[1:]),
              "device": "cpu", "dtype": "float32", "machine": machine(torch.device("cpu")), "versions": versions(),
              "load_before": load_average()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("backends (one BRA layer):", flush=True)
        result["backends"] = backend_matrix(work, args.repeats, args.warmup)
        print("BiFormer-T files:", flush=True)
        result["biformer_tiny_files"], model = files_of_tiny(work)
        print("latency:", flush=True)
        result["latency"] = latency(model, work, args.repeats, args.warmup)
        print(json.dumps(result["latency"]["median_ms"]), flush=True)
    print("memory:", flush=True)
    result["grad_checkpointing_memory"] = {
        b: memory(args.memory_size, args.memory_rounds, b) for b in ("auto", "gather")
    }
    result["load_after"] = load_average()
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
