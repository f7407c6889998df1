"""``bralib book``: list the chapters, generate their notebooks, run them under nbval, print the README's TOC.

Examples::

    bralib book list                 # table of contents from book.toml
    bralib book build                # chapters/NN_slug.py -> chapters/NN_slug.ipynb
    bralib book check 0 3            # build and run chapters 0 and 3 under nbval, print a results table
    bralib book toc --write          # refresh the table of contents in README.md
    bralib book html --open          # execute the chapters, build the website (build/site/html) and open it
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, default=None, help="book.toml to use (default: the nearest one)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="print the table of contents")
    toc = actions.add_parser("toc", help="print the table of contents as Markdown, as README.md holds it")
    toc.add_argument("--write", action="store_true", help="replace the table in README.md beside book.toml")
    for name, help_text in [
        ("build", "generate chapters' .ipynb from their py:percent sources"),
        ("check", "build and execute chapters under nbval; fail if one fails or exceeds its time budget"),
    ]:
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument(
            "chapters", nargs="*", metavar="CHAPTER", help="number (3), stem (03_routing) or file; default: all"
        )
    html_help = "build the book as a static website (every chapter executed; needs the [site] extra)"
    html = actions.add_parser("html", help=html_help, description=html_help)
    html.add_argument("--out", type=Path, default=None, help="build folder (default: build/site beside book.toml)")
    html.add_argument("--open", action="store_true", help="open the site's front page in a web browser")
    html.add_argument("--jobs", type=int, default=1, help="chapters executed at once (default: 1)")


def run(args: argparse.Namespace) -> int:
    from bralib.book import ManifestError, load_book
    from bralib.book import notebooks as nb

    try:
        book = load_book(args.manifest)
        if args.action == "list":
            print(f"{book.title} (v{book.version})\n")
            print(nb.contents_table(book))
            return 0
        if args.action == "toc":
            return _toc(book, args.write)
        if args.action == "html":
            return _html(book, args.out, args.open, args.jobs)
        chapters = book.select(args.chapters)
    except (ManifestError, ValueError, FileNotFoundError) as err:
        print(f"bralib book: error: {err}", file=sys.stderr)
        return 2
    if args.action == "build":
        try:
            paths = nb.build(chapters)
        except FileNotFoundError as err:
            print(f"bralib book: error: {err}", file=sys.stderr)
            return 2
        for path in paths:
            print(f"built {path.relative_to(book.root)}")
        return 0
    return _check(book, chapters)


def _html(book, out: Path | None, open_browser: bool, jobs: int) -> int:
    from bralib.book.site import SiteError, build_site

    if jobs < 1:
        print(f"bralib book: error: --jobs must be at least 1, got {jobs}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        index = build_site(book, out, jobs=jobs, progress=progress)
    except SiteError as err:
        print(f"bralib book: error: {err}", file=sys.stderr)
        return 1
    if open_browser:
        import webbrowser

        if not webbrowser.open(index.as_uri()):
            print("no web browser found: open this file in one", file=sys.stderr)
    print(index)
    return 0


def _toc(book, write: bool) -> int:
    from bralib.book import notebooks as nb

    if not write:
        print(nb.markdown_toc(book))
        return 0
    readme = book.root / "README.md"
    changed = nb.write_readme_toc(readme, book)
    print(f"{readme}: table of contents {'updated' if changed else 'already up to date'}")
    return 0


def _check(book, chapters) -> int:
    from bralib.book import notebooks as nb

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        results = nb.check(book, chapters, progress=progress)
    except FileNotFoundError as err:
        print(f"bralib book: error: {err}", file=sys.stderr)
        return 2
    failures = [r for r in results if not r.ok]
    for result in failures:
        print(nb.failure_summary(result) + "\n")
    print(nb.results_table(results, book.budget_seconds))
    passed = len(results) - len(failures)
    print(f"\n{passed} passed, {len(failures)} failed")
    return 1 if failures else 0
