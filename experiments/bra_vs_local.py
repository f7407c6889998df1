"""BRA against its local-window twin of equal FLOPs on digits-pairs: the stored result of chapter 7.

Trains ``biformer_nano`` twice with one config and seed, once with content routing (BRA) and once with
``routing="local"`` (every region attends to its ``topk`` nearest regions: the same FLOPs, the same
parameters, blind to content), and writes

* ``experiments/results/bra_vs_local.json``: the command, the machine, the config, each run's accuracy
  per epoch, final top-1 (model and EMA), wall time, throughput and FLOPs per image;
* ``experiments/checkpoints/biformer_nano_digits.pt``: the BRA run's EMA weights (inference only, a few
  MB), with its SHA-256 in ``biformer_nano_digits.pt.sha256``, for chapter 8.

Reproduce (about 15 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=2 python experiments/bra_vs_local.py

The two runs go one after the other, not side by side, so they do not compete for the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from bralib.train import TrainConfig, build_model, export_weights, read_log, train

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "bra_vs_local.json"
CHECKPOINT = HERE / "checkpoints" / "biformer_nano_digits.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (default: 6)")
    parser.add_argument("--train-size", type=int, default=3072, help="training images (default: 3072)")
    parser.add_argument("--val-size", type=int, default=1024, help="validation images (default: 1024)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--relation", default="same", choices=["same", "sum-mod-10"], help="digits-pairs label")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and layouts (default: 0)")
    parser.add_argument("--num-workers", type=int, default=1, help="data-loading processes (default: 1)")
    parser.add_argument("--runs", default="runs/bra_vs_local", help="where the two training runs go")
    parser.add_argument(
        "--result", default=str(RESULT), help=f"output JSON (default: {RESULT.relative_to(HERE.parent)})"
    )
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="where the BRA model's weights go")
    return parser.parse_args(argv)


def flops_per_image(config: TrainConfig, num_classes: int) -> int:
    """Forward FLOPs (a multiply-add counts 2) of one 64x64 image, by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(config, num_classes).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 64, 64))
    return int(counter.get_total_flops())


def run_one(args: argparse.Namespace, routing: str) -> dict:
    out = Path(args.runs) / routing
    config = TrainConfig(
        model="biformer_nano", routing=routing, data="digits-pairs", relation=args.relation, epochs=args.epochs,
        train_size=args.train_size, val_size=args.val_size, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, num_workers=args.num_workers, out=str(out), resume=True, progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    log = read_log(out)
    steps = [r for r in log if r["kind"] == "step"]
    history = [
        {k: round(r[k], 4) for k in ("epoch", "step", "loss", "top1", "ema_top1")} for r in log if r["kind"] == "eval"
    ]
    return {
        "config": config.to_dict(),
        "top1": round(result["top1"], 2),
        "ema_top1": round(result.get("ema_top1", float("nan")), 2),
        "val_loss": round(result["loss"], 4),
        "final_train_loss": round(sum(r["loss"] for r in steps[-20:]) / len(steps[-20:]), 4),
        "wall_seconds": round(wall, 1),
        "images_per_second": round(sum(r["images_per_s"] for r in steps) / len(steps), 1),
        "flops_per_image": flops_per_image(config, 2 if args.relation == "same" else 10),
        "history": history,
        "run_dir": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    started = time.time()
    runs = {routing: run_one(args, routing) for routing in ("content", "local")}
    content_checkpoint = Path(runs["content"]["run_dir"]) / "checkpoint.pt"
    Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    export_weights(content_checkpoint, args.checkpoint, ema=True)
    digest = hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest()
    Path(args.checkpoint + ".sha256").write_text(f"{digest}  {Path(args.checkpoint).name}\n")
    record = {
        "what": "stored result of experiments/bra_vs_local.py: biformer_nano on digits-pairs, BRA vs local routing",
        "command": "python experiments/bra_vs_local.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": "cpu"},  # fmt: skip
        "total_wall_seconds": round(time.time() - started, 1),
        "runs": {k: {key: v for key, v in run.items() if key != "run_dir"} for k, run in runs.items()},
        "gap_top1": round(runs["content"]["top1"] - runs["local"]["top1"], 2),
        "checkpoint": {"path": str(Path(args.checkpoint).relative_to(HERE.parent)), "sha256": digest,
                       "bytes": Path(args.checkpoint).stat().st_size, "weights": "ema"},  # fmt: skip
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("total_wall_seconds", "gap_top1")}, indent=2))
    for routing, run in runs.items():
        print(f"{routing:8s} top1 {run['top1']:6.2f}  EMA {run['ema_top1']:6.2f}  wall {run['wall_seconds']:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
