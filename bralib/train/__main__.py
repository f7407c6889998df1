"""``python -m bralib.train`` and ``torchrun --nproc_per_node=K -m bralib.train``: the flags of ``bralib train``."""

import sys

from bralib.train.cli import build_parser, run

if __name__ == "__main__":
    sys.exit(run(build_parser().parse_args()))
