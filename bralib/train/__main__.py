"""``python -m bralib.train`` and ``torchrun --nproc_per_node=K -m bralib.train``: the flags of ``bralib train``.

A user's error prints one line and exits 2, as ``bralib train`` does (``BRALIB_TRACEBACK=1``: the traceback).
"""

import sys

from bralib.cli import run_reporting_errors
from bralib.train.cli import build_parser, run

if __name__ == "__main__":
    sys.exit(run_reporting_errors(run, build_parser().parse_args(), "python -m bralib.train"))
