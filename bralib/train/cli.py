"""``bralib train``: the command line of :func:`bralib.train.train`, also behind ``torchrun -m bralib.train``.

Examples::

    bralib train --model biformer_nano --data digits-pairs --epochs 5 --batch-size 64 --out runs/nano
    bralib train --out runs/nano --resume                       # continue after an interruption
    torchrun --nproc_per_node=4 -m bralib.train --config recipe.toml --data /data/imagenet --device cuda --amp
"""

from __future__ import annotations

import argparse
import json

EPILOG = (
    "Every config field is a flag; --config FILE.toml sets many at once and the flags given override it. "
    "Several processes: torchrun --nproc_per_node=K -m bralib.train [the same flags] (gloo on CPU, nccl on CUDA; "
    "--batch-size is per process). Outputs in OUT: checkpoint.pt, log.jsonl, config.toml, metrics.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bralib.train.config import add_config_arguments

    parser.epilog = EPILOG
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from bralib.train.config import config_from_args
    from bralib.train.loop import train

    result = train(config_from_args(args))
    if result.get("world_size", 1) == 1 or _is_rank_zero():
        print(json.dumps(result, indent=2))
    return 0


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bralib.train", description="Train a model (see bralib train --help)."
    )
    add_arguments(parser)
    return parser
