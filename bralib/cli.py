"""The ``bralib`` command line: one sub-command per area of the library.

Each sub-command lives next to the code it drives, in a module that defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
sub-command runs, so ``bralib --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a line here when a new area gains a command.
COMMANDS: dict[str, tuple[str, str]] = {
    "book": ("bralib.book.cli", "list, build and check the book's chapters (book.toml)"),
    "exercise": ("bralib.exercises.cli", "check your answers to the book's exercises"),
    "train": ("bralib.train.cli", "train a model: CPU, one GPU, or many processes under torchrun"),
    "eval": ("bralib.train.eval_cli", "top-1 / top-5 of a training checkpoint (model and EMA weights)"),
    "bench": ("bralib.bench.cli", "time the BRA backends on BiFormer's stage shapes (and a whole model)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bralib", description="Bi-Level Routing Attention and BiFormer.")
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
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
