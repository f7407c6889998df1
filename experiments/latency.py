"""Batch-1 CPU inference latency of BiFormer-T/S/B (float32, eager, torch.inference_mode), per backend.

The official code's numbers on a 2-core CPU (../shared/reference/official_biformer.md) are printed beside
ours. Usage: ``THREADS=2 OMP_NUM_THREADS=2 python experiments/latency.py``.
"""

import os
import statistics
import time

import torch

import bralib

OFFICIAL_MS = {"biformer_tiny": 49.9, "biformer_small": 98.8, "biformer_base": 183.0}


def median_ms(model: torch.nn.Module, image: torch.Tensor, warmup: int = 2, repeats: int = 9) -> list[float]:
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(image)
        for _ in range(repeats):
            start = time.perf_counter()
            model(image)
            times.append(1e3 * (time.perf_counter() - start))
    return times


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    print(f"threads {torch.get_num_threads()} | load average before: {open('/proc/loadavg').read().strip()}")
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name, official in OFFICIAL_MS.items():
        cells = []
        for backend in ("auto", "gather"):
            times = median_ms(bralib.create_model(name, backend=backend).eval(), image)
            cells.append(f"{backend}: median {statistics.median(times):6.1f} ms ({min(times):.1f}-{max(times):.1f})")
        print(f"{name:<15} official {official:6.1f} ms | " + " | ".join(cells))
    print(f"load average after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
