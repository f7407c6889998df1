"""Batch-1 CPU inference latency of BiFormer-T/S/B (float32, eager, torch.inference_mode), per backend.

The official code's numbers on a 2-core CPU (measured by the project earlier, copied into this script) are printed
beside ours. The backends of one model are timed interleaved, as ``bralib bench`` times them.
Usage: ``THREADS=2 OMP_NUM_THREADS=2 python experiments/latency.py``.
"""

import os

import torch

import bralib
from bralib.bench.measure import interleaved, load_average, median

OFFICIAL_MS = {"biformer_tiny": 49.9, "biformer_small": 98.8, "biformer_base": 183.0}
BACKENDS = ("auto", "gather")


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    print(f"threads {torch.get_num_threads()} | load average before: {load_average()}")
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name, official in OFFICIAL_MS.items():
        models = {backend: bralib.create_model(name, backend=backend).eval() for backend in BACKENDS}
        with torch.inference_mode():
            tasks = {backend: (lambda model=model: model(image)) for backend, model in models.items()}
            wall, _, errors = interleaved(tasks, device=torch.device("cpu"), repeats=9, warmup=2)
        assert not errors, errors
        cells = [f"{b}: median {median(t):6.1f} ms ({min(t):.1f}-{max(t):.1f})" for b, t in wall.items()]
        print(f"{name:<15} official {official:6.1f} ms | " + " | ".join(cells))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
