"""Does routing matter? Every arm of the isotropic ablation family on shape-pairs, several seeds: chapter 10.

Every arm (``bralib.models.isotropic``: full attention, BRA, local routing, window, random and oracle
routing, axial, dilated) is the same one-block network on 8x8 tokens with the same parameters and, full
attention and the oracle aside, the same multiply-adds within 1 %; only the keys each query may see
differ. Each is trained from the same initial weights per seed on ``shape-pairs``
(``bralib.data.shape_pairs``) with two outputs at once: the relational label ``same`` (does the far-away
ring have the square's colour?) and the local control ``colour`` (the square's colour).

Writes ``experiments/results/routing_ablation.json`` (the command, the machine, per-epoch curves, final
accuracies, mean and sd per arm and label, and the paired-by-seed 95 % t intervals of BRA - local,
BRA - window and full - BRA per label), rewritten after every finished run, and the trained weights
of each arm's seed-0 run in float16 under ``experiments/checkpoints/routing_ablation/`` with SHA-256 files.

Reproduce (CPU, one thread; the same command with ``--device cuda`` on a GPU)::

    OMP_NUM_THREADS=1 python experiments/routing_ablation.py

It is resumable: a finished run (its ``result.json`` exists) is skipped, an interrupted one continues from
the checkpoint of its last finished epoch. Runs go seed by seed, the four arms the chapter needs first
(full, bra, local, window), so a partial result is already paired.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import bralib
from bralib.data.shape_pairs import LABELS, make_shape_pairs
from bralib.models.isotropic import isotropic_macs
from bralib.train.optim import WarmupCosine, build_optimizer

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "routing_ablation.json"
CHECKPOINTS = HERE / "checkpoints" / "routing_ablation"
ARMS = ("full", "bra", "local", "window", "random", "oracle", "axial", "dilated")
VAL_SEED = 1_000_000  # one validation set for every run: accuracies are paired by image as well as by seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms, in order of priority")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default: 0 1 2 3 4)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default: 5)")
    parser.add_argument("--train-size", type=int, default=6144, help="training images per seed (default: 6144)")
    parser.add_argument("--val-size", type=int, default=2048, help="validation images (default: 2048)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    parser.add_argument("--distractors", type=int, default=2, help="crosses per image (default: 2)")
    parser.add_argument("--min-distance", type=int, default=6, help="square-ring distance in cells (default: 6)")
    parser.add_argument("--colours", type=int, default=6, help="colours used (default: 6)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default: 1)")
    parser.add_argument("--runs", default="runs/routing_ablation", help="where the runs' checkpoints go")
    parser.add_argument("--result", default=str(RESULT), help="output JSON")
    parser.add_argument("--checkpoints", default=str(CHECKPOINTS), help="where the float16 weights go")
    return parser.parse_args(argv)


def split_logits(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 2 + 6) -> {"same": (B, 2), "colour": (B, 6)}: one classifier output per label."""
    return dict(zip(LABELS, logits.split(list(LABELS.values()), dim=-1), strict=True))


def loss_fn(logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the two labels' cross-entropies."""
    return sum(F.cross_entropy(out, labels[name]) for name, out in split_logits(logits).items())


@torch.no_grad()
def accuracy(model: torch.nn.Module, data, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """Top-1 (%) of each label on ``data`` (a ShapePairs)."""
    model.eval()
    correct = dict.fromkeys(LABELS, 0)
    for start in range(0, len(data), batch_size):
        logits = model(data.images[start : start + batch_size].to(device))
        for name, out in split_logits(logits).items():
            correct[name] += (out.argmax(-1).cpu() == data.labels[name][start : start + batch_size]).sum().item()
    return {name: 100.0 * hits / len(data) for name, hits in correct.items()}


def run_one(args: argparse.Namespace, arm: str, seed: int, val, device: torch.device) -> dict:
    """Train one arm with one seed, resuming from its last epoch; returns its record (also OUT/result.json)."""
    out = Path(args.runs) / f"{arm}_seed{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    train = make_shape_pairs(args.train_size, seed=1000 + seed, min_distance=args.min_distance,
                             distractors=args.distractors, colours=args.colours)  # fmt: skip
    torch.manual_seed(seed)  # the same initial weights for every arm of a seed (the arms share all parameters)
    model = bralib.create_model(f"isotropic_{arm}", num_classes=sum(LABELS.values()), heads=args.heads)
    model = model.to(device)
    optimizer = build_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = args.train_size // args.batch_size
    scheduler = WarmupCosine(optimizer, total_steps=args.epochs * steps_per_epoch, warmup_steps=steps_per_epoch // 2,
                             lr=args.lr, min_lr=1e-5, warmup_lr=1e-6)  # fmt: skip
    history, epoch, seconds = [], 0, 0.0
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, epoch, seconds = state["history"], state["epoch"], state["seconds"]
        torch.set_rng_state(state["rng"])
        print(f"--- {arm} seed {seed}: resumed after epoch {epoch}", file=sys.stderr, flush=True)
    while epoch < args.epochs:
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        losses = []
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            images = train.images[batch].to(device)
            labels = {name: t[batch].to(device) for name, t in train.labels.items()}
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        epoch += 1
        val_top1 = accuracy(model, val, device)
        seconds += time.perf_counter() - start
        history.append({"epoch": epoch, "train_loss": round(sum(losses) / len(losses), 4),
                        **{f"val_{k}": round(v, 2) for k, v in val_top1.items()}})  # fmt: skip
        print(f"{arm} seed {seed} epoch {epoch}: {history[-1]}", file=sys.stderr, flush=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "history": history, "epoch": epoch, "seconds": seconds, "rng": torch.get_rng_state()}  # fmt: skip
        torch.save(state, checkpoint.with_suffix(".tmp"))
        os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    record = {"arm": arm, "seed": seed, "final": {k: history[-1][f"val_{k}"] for k in LABELS}, "history": history,
              "wall_seconds": round(seconds, 1), "steps": args.epochs * steps_per_epoch,
              "parameters": sum(p.numel() for p in model.parameters()),
              "macs": isotropic_macs(model)["total"]}  # fmt: skip
    if seed == min(args.seeds):
        record["checkpoint"] = export_fp16(model, Path(args.checkpoints) / f"isotropic_{arm}.pt")
    done.write_text(json.dumps(record, indent=2) + "\n")
    return record


def export_fp16(model: torch.nn.Module, path: Path) -> dict:
    """Save the state dict in float16 with a SHA-256 file beside it; returns where and what."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Path(str(path) + ".sha256").write_text(f"{digest}  {path.name}\n")
    return {"path": os.path.relpath(path, HERE.parent), "sha256": digest, "bytes": path.stat().st_size}


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (for a two-sided 95 % interval)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
    return table.get(df, 1.96 + 2.4 / df)  # beyond 10: within 0.01 of the exact value


def mean_sd(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": round(mean, 2), "sd": round(sd, 2) if n > 1 else None}


def paired_ci(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Mean of a - b over the seeds both have, and its paired 95 % t interval (None with fewer than 2 seeds)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    stats = mean_sd(diffs)
    half = t_quantile_975(len(diffs) - 1) * stats["sd"] / math.sqrt(len(diffs))
    return {"seeds": seeds, "differences": [round(d, 2) for d in diffs], "mean": stats["mean"],
            "ci95": [round(stats["mean"] - half, 2), round(stats["mean"] + half, 2)]}  # fmt: skip


def summarise(records: list[dict]) -> dict:
    """Per arm and label: mean and sd over seeds; per label: the paired intervals of the chapter's contrasts."""
    by_arm: dict[str, dict[int, dict]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r["final"]
    table = {
        arm: {label: mean_sd([f[label] for f in runs.values()]) for label in LABELS} for arm, runs in by_arm.items()
    }
    contrasts = {}
    for first, second in (("bra", "local"), ("bra", "window"), ("full", "bra"), ("bra", "random"), ("oracle", "bra")):
        if first in by_arm and second in by_arm:
            for label in LABELS:
                a = {s: f[label] for s, f in by_arm[first].items()}
                b = {s: f[label] for s, f in by_arm[second].items()}
                contrasts[f"{first} - {second}: {label}"] = paired_ci(a, b)
    return {"table": table, "paired": contrasts}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.time()
    val = make_shape_pairs(
        args.val_size, seed=VAL_SEED, min_distance=args.min_distance, distractors=args.distractors, colours=args.colours
    )
    records = []
    required = [a for a in args.arms if a in ARMS[:4]]
    order = [(s, a) for s in args.seeds for a in required] + [(s, a) for s in args.seeds for a in args.arms
                                                               if a not in required]  # fmt: skip
    for seed, arm in order:
        records.append(run_one(args, arm, seed, val, device))
        write_result(args, argv, records, started)
    print(json.dumps(summarise(records)["paired"], indent=1))
    return 0


def write_result(args: argparse.Namespace, argv: list[str] | None, records: list[dict], started: float) -> None:
    arguments = argv if argv is not None else sys.argv[1:]
    record = {
        "what": "stored result of experiments/routing_ablation.py: the isotropic arms on shape-pairs (chapter 10)",
        "command": shlex.join(
            [
                "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", ""),
                "python",
                "experiments/routing_ablation.py",
                *arguments,
            ]
        ),  # fmt: skip
        "settings": {k: v for k, v in vars(args).items() if k not in ("result", "runs", "checkpoints")},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "device": args.device,
        },  # fmt: skip
        "total_wall_seconds": round(sum(r["wall_seconds"] for r in records), 1),
        **summarise(records),
        "runs": records,
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.result).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, args.result)


if __name__ == "__main__":
    sys.exit(main())
