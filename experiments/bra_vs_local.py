"""BRA against its local-window twin of equal FLOPs on digits-pairs: the stored result of chapter 7.

Trains ``biformer_nano`` on the ``partner`` relation of digits-pairs twice, with one config and seed:
once with content routing (BRA) and once with ``routing="local"`` (every region attends to its
``topk`` nearest regions: the same FLOPs, the same parameters, blind to content).

Both runs start from one shared, short pretraining on the ``cue`` relation (the same kind of images,
labelled by the marked digit itself: a local task). From scratch, biformer_nano spends hundreds of
steps on a plateau before it recognises digits at all; the pretraining pays that once, with local
routing (so nothing in the starting weights favours BRA), and the comparison then measures what the
two routings do with the far-away partner. ``--pretrain-epochs 0`` skips it.

Writes

* ``experiments/results/bra_vs_local.json``: the command, the machine, the configs, each run's accuracy
  per epoch, final top-1 (model and EMA), wall time, throughput and FLOPs per image;
* ``experiments/checkpoints/biformer_nano_digits.pt``: the BRA run's EMA weights in float16 (inference
  only, about 2 MB), with its SHA-256 in ``biformer_nano_digits.pt.sha256``, for chapter 8.

Reproduce (one thread, as stored: 19 minutes of wall time on a shared 2-core CPU machine)::

    OMP_NUM_THREADS=1 python experiments/bra_vs_local.py

The runs go one after the other, not side by side, so they do not compete for the cores. An
interrupted experiment continues where it stopped when started again (every run resumes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from bralib.data.digits_pairs import RELATIONS
from bralib.train import TrainConfig, build_model, evaluate_checkpoint, export_weights, read_log, train

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "bra_vs_local.json"
CHECKPOINT = HERE / "checkpoints" / "biformer_nano_digits.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=16, help="epochs of each compared run (default: 16)")
    parser.add_argument("--pretrain-epochs", type=int, default=8, help="epochs of the shared 'cue' pretraining "
                        "(default: 8; 0 trains both runs from scratch)")  # fmt: skip
    parser.add_argument("--distractors", type=int, default=2, help="distractor digits per image (default: 2)")
    parser.add_argument("--strokes", type=int, default=0, help="grey strokes per image (default: 0)")
    parser.add_argument("--pretrain-distractors", type=int, default=0, help="distractors in pretraining (default: 0)")
    parser.add_argument("--pretrain-strokes", type=int, default=0, help="strokes in pretraining (default: 0)")
    parser.add_argument("--train-size", type=int, default=8192, help="training images per epoch (default: 8192)")
    parser.add_argument("--val-size", type=int, default=1024, help="validation images (default: 1024)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    parser.add_argument(
        "--relation", default="partner", choices=list(RELATIONS), help="digits-pairs label compared (default: partner)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and layouts (default: 0)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading processes (default: 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--runs", default="runs/bra_vs_local", help="where the training runs go")
    parser.add_argument("--result", default=str(RESULT), help="output JSON (default: experiments/results/...)")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="where the BRA model's weights go")
    return parser.parse_args(argv)


def flops_per_image(config: TrainConfig, num_classes: int) -> int:
    """Forward FLOPs (a multiply-add counts 2) of one 64x64 image, by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(config, num_classes).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 64, 64))
    return int(counter.get_total_flops())


def run_one(args: argparse.Namespace, name: str, **fields) -> dict:
    """Train one run (resuming it if it was interrupted) and summarise its log."""
    out = Path(args.runs) / name
    config = TrainConfig(
        model="biformer_nano", data="digits-pairs", train_size=args.train_size, val_size=args.val_size,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_workers=args.num_workers, threads=args.threads,
        out=str(out), resume=True, progress=False, **fields,
    )  # fmt: skip
    print(f"--- {name}: {fields}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    log = read_log(out)
    steps = [r for r in log if r["kind"] == "step"]
    history = [
        {k: round(r[k], 4) for k in ("epoch", "step", "loss", "top1", "ema_top1")} for r in log if r["kind"] == "eval"
    ]
    return {
        "config": {k: v for k, v in config.to_dict().items() if k not in ("out", "resume", "progress")},
        "top1": round(result["top1"], 2),
        "ema_top1": round(result.get("ema_top1", float("nan")), 2),
        "val_loss": round(result["loss"], 4),
        "final_train_loss": round(sum(r["loss"] for r in steps[-20:]) / len(steps[-20:]), 4),
        "steps": result["steps"],
        "wall_seconds": round(wall, 1),
        "images_per_second": round(sum(r["images_per_s"] for r in steps) / len(steps), 1),
        "flops_per_image": flops_per_image(config, RELATIONS[config.relation]),
        "history": history,
        "run_dir": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    runs, init = {}, None
    if args.pretrain_epochs:
        runs["pretrain_cue"] = run_one(args, "pretrain_cue", relation="cue", routing="local",
                                       epochs=args.pretrain_epochs, distractors=args.pretrain_distractors,
                                       strokes=args.pretrain_strokes)  # fmt: skip
        init = str(Path(runs["pretrain_cue"]["run_dir"]) / "checkpoint.pt")
    for routing in ("content", "local"):
        runs[routing] = run_one(args, routing, relation=args.relation, routing=routing, epochs=args.epochs, init=init,
                                distractors=args.distractors, strokes=args.strokes)  # fmt: skip

    content_checkpoint = Path(runs["content"]["run_dir"]) / "checkpoint.pt"
    Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    export_weights(content_checkpoint, args.checkpoint, ema=True, dtype=torch.float16)
    exported = evaluate_checkpoint(args.checkpoint, num_workers=0, device="cpu")  # what chapter 8 loads
    digest = hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest()
    Path(args.checkpoint + ".sha256").write_text(f"{digest}  {Path(args.checkpoint).name}\n")
    arguments = argv if argv is not None else sys.argv[1:]
    record = {
        "what": "stored result of experiments/bra_vs_local.py: biformer_nano on digits-pairs, BRA vs local routing",
        "command": shlex.join(
            [
                "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", ""),
                "python",
                "experiments/bra_vs_local.py",
                *arguments,
            ]
        ),  # fmt: skip
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "device": "cpu",
        },  # fmt: skip
        "total_wall_seconds": round(time.time() - started, 1),
        "runs": {k: {key: v for key, v in run.items() if key != "run_dir"} for k, run in runs.items()},
        "gap_top1": round(runs["content"]["top1"] - runs["local"]["top1"], 2),
        "gap_ema_top1": round(runs["content"]["ema_top1"] - runs["local"]["ema_top1"], 2),
        "checkpoint": {
            "path": os.path.relpath(args.checkpoint, HERE.parent),
            "sha256": digest,
            "bytes": Path(args.checkpoint).stat().st_size,
            "weights": "ema, float16",
            "top1": round(exported["top1"], 2),
            "loss": round(exported["loss"], 4),
        },  # fmt: skip
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("total_wall_seconds", "gap_top1", "gap_ema_top1")}, indent=2))
    for name, run in runs.items():
        print(f"{name:13s} top1 {run['top1']:6.2f}  EMA {run['ema_top1']:6.2f}  wall {run['wall_seconds']:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
