"""``bralib exercise``: check your answers in exercises/NN_slug.py from a terminal.

Examples::

    bralib exercise list                       # every exercise, its chapter and file
    bralib exercise check tokens_to_attend     # your function against its check
    bralib exercise check --chapter 0          # every exercise of chapter 0
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


def run(args: argparse.Namespace) -> int:
    from bralib.book import ManifestError, load_book
    from bralib.book.notebooks import format_table
    from bralib.exercises import check, load_function

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
    verdicts = []
    for name in wanted:
        try:
            fn = load_function(name, solution=args.solutions, manifest=args.manifest)
        except Exception as err:  # a learner's file may fail to import in any way: say so and go on
            print(f"{name}: FAILED - cannot load the function: {type(err).__name__}: {err}")
            verdicts.append(False)
            continue
        verdicts.append(check(name, fn).passed)
    passed = sum(verdicts)
    print(f"\n{passed} passed, {len(verdicts) - passed} failed")
    return 0 if all(verdicts) else 1
