"""``bralib convert``: an official BiFormer ``.pth`` (or a bralib training checkpoint) to bralib safetensors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bralib.cli import at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="an official checkpoint (.pth, with --model) or a bralib "
                        "training checkpoint (.pt, without --model)")  # fmt: skip
    parser.add_argument("out", metavar="OUT.safetensors", help="the file to write; OUT.safetensors.sha256 goes beside")
    parser.add_argument("--model", default=None, help="the official checkpoint's architecture, e.g. biformer_tiny "
                        "(loaded strictly: every key and shape must fit)")  # fmt: skip
    parser.add_argument("--num-classes", type=at_least(1), default=1000,
                        help="classifier outputs of the official checkpoint (1000)")  # fmt: skip
    parser.add_argument("--class-names", default=None, metavar="FILE",
                        help="a text file with one class name a line, in class order, stored in the file")  # fmt: skip
    parser.add_argument("--no-ema", dest="ema", action="store_false",
                        help="training checkpoint: the model's weights instead of the EMA's")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from bralib.export.convert import convert_official, convert_trained

    if not str(args.out).endswith(".safetensors"):
        raise ValueError(f"OUT must end in .safetensors, got {args.out!r}")
    if args.model is None:
        if args.class_names is not None:
            raise ValueError("--class-names is for official checkpoints (with --model); a training checkpoint's "
                             "names come from its dataset")  # fmt: skip
        record = convert_trained(args.source, args.out, ema=args.ema)
    else:
        names = None
        if args.class_names is not None:
            names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
        record = convert_official(args.source, args.out, args.model, num_classes=args.num_classes, class_names=names)
    print(json.dumps(record, indent=2))
    return 0
