"""``bralib eval``: top-1 / top-5 of a training checkpoint (plain and EMA weights) on a dataset."""

from __future__ import annotations

import argparse
import json

from bralib.cli import at_least as _at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint.pt written by bralib train")
    parser.add_argument(
        "--data", default=None, help="dataset ('digits-pairs' or a directory); default: the training run's"
    )
    parser.add_argument(
        "--val-size", type=_at_least(1), default=None, help="validation images (default: the training run's)"
    )
    parser.add_argument(
        "--batch-size", type=_at_least(1), default=None, help="images per batch (default: the training run's)"
    )
    parser.add_argument("--num-workers", type=_at_least(0), default=0, help="DataLoader worker processes (default: 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: auto)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: as the training run)")  # fmt: skip
    parser.add_argument(
        "--model-factory", default=None, metavar="MODULE:FACTORY",
        help="build the model with this factory of yours: needed for a checkpoint of a model outside bralib's "
        "registry, since bralib never imports code named in a checkpoint",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from bralib.train.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, data=args.data, val_size=args.val_size, batch_size=args.batch_size,
        num_workers=args.num_workers, device=args.device, amp=args.amp, factory=args.model_factory,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0
