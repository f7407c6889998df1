"""BiFormer-S (one run per BRA backend) next to timm's Swin-T: AMP inference and training throughput on a GPU.

The GPU target of the speed issue: at 224x224, batch 128, float16 autocast, channels_last, images per second
of BiFormer-S divided by those of ``swin_tiny_patch4_window7_224`` measured in the same process, eager and
``torch.compile``d. The H100 baseline of the released algorithm is 0.29x (inference) and 0.30x (training)
(``benchmarks/h100_anchors.json``); the goal is >= 1.0x in both.

timm is used here only, to build Swin-T; bralib does not depend on it::

    pip install timm
    python benchmarks/gpu_vs_swin.py --json benchmarks/gpu_vs_swin.json
    python benchmarks/gpu_vs_swin.py --backends gather auto --compile both

Timing: every variant (model x backend x mode x compile) is built first; then rounds run each variant for
``--steps`` steps in a rotating order, so clock and thermal changes hit all alike; throughput is the median
over rounds of batch * steps / time, measured with CUDA events. ``--device cpu --batch 2 --steps 1 --rounds 1
--image-size 112 --no-swin`` is a quick dry run of the script's logic (no meaningful numbers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import bralib
from bralib.bench.measure import load_average, machine
from bralib.bench.model_bench import set_backend


def build(name: str, backend: str | None, device: torch.device, image_size: int) -> torch.nn.Module:
    if name == "swin_t":
        try:
            import timm
        except ImportError as err:
            raise SystemExit("gpu_vs_swin.py needs timm for Swin-T: pip install timm") from err
        model = timm.create_model("swin_tiny_patch4_window7_224", img_size=image_size)
    else:
        model = bralib.create_model("biformer_small")
        set_backend(model, backend)
    return model.to(device, memory_format=torch.channels_last)


def make_step(model, mode: str, images, labels, device: torch.device, amp_dtype) -> Callable[[], None]:
    """One inference batch (no_grad) or one training step (forward, backward, AdamW step) under AMP."""
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype)
    if mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.no_grad(), autocast:
                model(images)

        return infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - begin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu only for a dry run")
    parser.add_argument("--batch", type=int, default=128, help="images per batch (default: 128)")
    parser.add_argument("--image-size", type=int, default=224, help="input side (default: 224)")
    parser.add_argument("--amp-dtype", default="float16", choices=("float16", "bfloat16"), help="autocast dtype")
    parser.add_argument(
        "--backends", nargs="+", default=["gather", "sdpa", "dense", "lean", "triton", "auto"], metavar="NAME",
        help="BRA backends for BiFormer-S (default: gather sdpa dense lean triton auto)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", default="both", choices=("off", "on", "both"), help="torch.compile (default: both)"
    )
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round (default: 10)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first (default: 3)")
    parser.add_argument("--no-swin", action="store_true", help="skip Swin-T (for a dry run where timm is absent)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_vs_swin.py: no CUDA GPU on this machine (use --device cpu only for a dry run)")
        return 2
    amp_dtype = getattr(torch, args.amp_dtype)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
    compiled_modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]

    variants: dict[tuple[str, str, bool], Callable[[], None]] = {}
    first_call_s: dict[str, float] = {}
    errors: dict[str, str] = {}
    models = ([] if args.no_swin else [("swin_t", None)]) + [(f"biformer_s {b}", b) for b in args.backends]
    for label, backend in models:
        for mode in ("infer", "train"):
            for compiled in compiled_modes:
                key = (label, mode, compiled)
                name = f"{label} {mode}{' compiled' if compiled else ''}"
                try:
                    model = build("swin_t" if backend is None else "biformer_s", backend, device, args.image_size)
                    step = make_step(
                        torch.compile(model) if compiled else model, mode, images, labels, device, amp_dtype
                    )
                    begin = time.perf_counter()
                    for _ in range(args.warmup):  # the first call compiles where torch.compile is on
                        step()
                    first_call_s[name] = round(time.perf_counter() - begin, 2)
                    variants[key] = step
                except SystemExit:
                    raise
                except Exception as err:  # reported, not fatal: one backend failing must not hide the others
                    errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                    print(f"{name}: failed ({errors[name]})", file=sys.stderr)

    per_round: dict[tuple[str, str, bool], list[float]] = {key: [] for key in variants}
    keys = list(variants)
    for round_number in range(args.rounds):
        shift = round_number % max(len(keys), 1)
        for key in keys[shift:] + keys[:shift]:
            seconds = timed(variants[key], args.steps, device)
            per_round[key].append(args.batch * args.steps / seconds)
    throughput = {key: statistics.median(values) for key, values in per_round.items()}

    print(f"{machine(device)}; batch {args.batch}, {args.image_size}x{args.image_size}, AMP {args.amp_dtype}, "
          f"median of {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    print(f"{'model':<24}{'mode':<8}{'compiled':<10}{'images/s':>10}{'x Swin-T':>10}")
    rows = []
    for (label, mode, compiled), value in throughput.items():
        swin = throughput.get(("swin_t", mode, compiled))
        ratio = None if swin is None else value / swin
        rows.append({"model": label, "mode": mode, "compiled": compiled, "images_per_s": round(value, 1),
                     "vs_swin_t": None if ratio is None else round(ratio, 3)})  # fmt: skip
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        print(f"{label:<24}{mode:<8}{'yes' if compiled else 'no':<10}{value:>10.1f}{ratio_text:>10}")
    for name, message in errors.items():
        print(f"{name}: not run ({message})")
    if args.json:
        result = {
            "kind": "bralib-gpu-vs-swin", "command": " ".join(sys.argv), "machine": machine(device),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "load_average": load_average(), "batch": args.batch, "image_size": args.image_size,
            "amp_dtype": args.amp_dtype, "rows": rows, "first_call_s": first_call_s, "errors": errors,
        }  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
