"""``bralib exercise``: check your answers in exercises/NN_slug.py from a terminal.

Examples::

    bralib exercise list                       # every exercise, its chapter and file
    bralib exercise check tokens_to_attend     # your function against its check
    bralib exercise check --chapter 0          # every exercise of chapter 0
    bralib exercise check --timeout 10 NAME    # give your code 10 s instead of 60

Each check runs your code in a child process: an endless loop is stopped after ``--timeout`` seconds, and a
``sys.exit()`` or a crash in your code is a FAILED verdict, never the end of the command. The exit code is 0
when every check passed, 1 when one failed, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, default=None, help="book.toml to use (default: the nearest one)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the exercises of every chapter")
    check = actions.add_parser("check", help="run the checks on your functions")
    check.add_argument("names", nargs="*", metavar="NAME", help="exercise names; default: all")
    check.add_argument("--chapter", action="append", default=[], help="every exercise of this chapter (repeatable)")
    check.add_argument("--solutions", action="store_true", help="check exercises/solutions/ instead of your files")
    check.add_argument(
        "--timeout", type=_seconds, default=None, metavar="S",
        help="seconds each exercise's check may run before it is stopped (default: 60)",
    )  # fmt: skip


def _seconds(text: str) -> float:
    """--timeout: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from bralib.book import ManifestError, load_book
    from bralib.book.notebooks import format_table
    from bralib.exercises import DEFAULT_TIMEOUT, check

    try:
        book = load_book(args.manifest)
        if args.action == "list":
            rows = [
                (n, c.stem, str(c.exercise_file.relative_to(book.root))) for c in book.chapters for n in c.exercises
            ]
            print(format_table(("exercise", "chapter", "your file"), rows))
            return 0
        wanted = list(args.names)
        for chapter in book.select(args.chapter) if args.chapter else []:
            wanted += [n for n in chapter.exercises if n not in wanted]
        wanted = wanted or book.exercise_names
        unknown = [n for n in wanted if n not in book.exercise_names]
        if unknown:
            raise ManifestError(f"unknown exercise(s) {unknown}; book.toml lists: {', '.join(book.exercise_names)}")
    except ManifestError as err:
        print(f"bralib exercise: error: {err}", file=sys.stderr)
        return 2
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    # Each check loads the learner's file in its own child process: a file that fails to import, loops or
    # exits gives that exercise a FAILED verdict and the others still run.
    verdicts = [check(name, solution=args.solutions, manifest=args.manifest, timeout=timeout).passed for name in wanted]
    passed = sum(verdicts)
    print(f"\n{passed} passed, {len(verdicts) - passed} failed")
    return 0 if all(verdicts) else 1
