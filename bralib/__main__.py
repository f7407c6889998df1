"""``python -m bralib``: the ``bralib`` command line (``python -m bralib --help``)."""

import sys

from bralib.cli import main

if __name__ == "__main__":
    sys.exit(main())
