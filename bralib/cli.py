"""The ``bralib`` command line: one sub-command per area of the library.

Each sub-command lives next to the code it drives, in a module that defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
sub-command runs, so ``bralib --help`` stays fast.

Errors: a user's bad input (a :class:`bralib.errors.BralibError`, or one of :data:`USER_ERRORS` that
validation raises) prints one line, ``bralib <cmd>: error: ...``, and exits 2, as argparse does for a bad
flag. ``bralib --traceback <cmd> ...`` or ``BRALIB_TRACEBACK=1`` shows the whole traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# name -> (module, one-line help). Add a line here when a new area gains a command.
COMMANDS: dict[str, tuple[str, str]] = {
    "book": ("bralib.book.cli", "list, build and check the book's chapters (book.toml)"),
    "exercise": ("bralib.exercises.cli", "check your answers to the book's exercises"),
    "train": ("bralib.train.cli", "train a model: CPU, one GPU, or many processes under torchrun"),
    "eval": ("bralib.train.eval_cli", "top-1 / top-5 of a training checkpoint (model and EMA weights)"),
    "bench": ("bralib.bench.cli", "time the BRA backends on BiFormer's stage shapes (and a whole model)"),
    "predict": ("bralib.export.predict_cli", "top-5 classes of images and a figure of where their regions route"),
    "convert": ("bralib.export.convert_cli", "official BiFormer .pth (or a training checkpoint) to safetensors"),
    "export": ("bralib.export.cli", "BiFormer to ONNX or a torch.export program, checked against PyTorch"),
}


# Built-in errors that bralib's validation raises with a full message: shown as one line, like BralibError.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


# OSErrors that say what is wrong with the machine (full disk, quota, read-only), not a bug: also one line.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def at_least(least: int):
    """An argparse type: an integer >= ``least``. 0 never stands in for "default": leave the flag out for that."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {value} (leave the flag out for the default)")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    from bralib import __version__

    parser = argparse.ArgumentParser(prog="bralib", description="Bi-Level Routing Attention and BiFormer.")
    parser.add_argument("--version", action="version", version=f"bralib {__version__}")
    parser.add_argument(
        "--traceback", action="store_true",
        help="on an error, show the whole Python traceback (also: environment variable BRALIB_TRACEBACK=1)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return run_reporting_errors(module.run, args, f"bralib {args.command}", traceback=args.traceback)


def run_reporting_errors(run, args: argparse.Namespace, prog: str, *, traceback: bool = False) -> int:
    """``run(args)``; a user's error becomes one line on stderr, ``PROG: error: ...``, and exit code 2."""
    from bralib.errors import BralibError

    if traceback or os.environ.get("BRALIB_TRACEBACK", "") not in ("", "0"):
        return int(run(args) or 0)
    try:
        return int(run(args) or 0)
    except (BralibError, *USER_ERRORS) as err:
        message = str(err) or type(err).__name__
    except OSError as err:  # the machine, not bralib: a full disk, a read-only file system
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        message = f"{err.strerror}: {err.filename!r}" if err.filename else str(err)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
