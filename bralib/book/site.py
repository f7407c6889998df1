"""The book as an offline website: ``bralib book html`` runs Sphinx with MyST-NB over the executed chapters.

The site's fixed sources live in ``docs/site/`` (Sphinx's ``conf.py``, the bibliography page, the notation table)
and the bibliography in ``docs/references.bib``. :func:`write_sources` copies them into ``BUILD/src`` beside what it
generates from ``book.toml`` and the chapters:

- ``chapters/NN_slug.ipynb``: each chapter's py:percent source as a notebook, with the exercises' solutions from
  ``exercises/solutions/NN_slug.py`` appended in folded dropdowns;
- ``index.md`` (the front page), ``map.md`` (the chapter map: prerequisites and reading times) and ``notation.md``.

:func:`build_site` then runs Sphinx into ``BUILD/html``. MyST-NB executes each chapter once and keeps its outputs
in ``BUILD/jupyter_cache`` until the chapter's cells, or the library and data it uses, change. The chapters run in
the repository's ``chapters/`` folder, exactly as under nbval, but the built site is self-contained: ``BUILD/html``
can be copied anywhere and fetches nothing (MathJax comes from the PyPI package ``sphinx-mathjax-offline``).

Sphinx and its extensions are imported by the Sphinx process only; this module needs jupytext (and matplotlib
for the chapter map's picture).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bralib.book.manifest import Book, Chapter
from bralib.book.notebooks import ANSI_ESCAPE

SITE_SOURCES = Path("docs") / "site"  # relative to the book's root
BIBLIOGRAPHY = Path("docs") / "references.bib"
DEFAULT_BUILD = Path("build") / "site"
CELL_TIMEOUT_SECONDS = 180  # one cell, wall clock; a whole chapter costs at most budget_seconds (120) of CPU
# The [site] extra's import names (sphinx-mathjax-offline's module keeps the hyphens of its distribution).
SITE_PACKAGES = (
    "sphinx",
    "myst_nb",
    "sphinx_book_theme",
    "sphinx_design",
    "sphinxcontrib.bibtex",
    "sphinx-mathjax-offline",
)


class SiteError(RuntimeError):
    """The website could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class Symbol:
    """One row of the notation page."""

    math: str  # TeX, without dollars
    code: str  # bralib's name for it, or ""
    meaning: str
    chapter: int


# ---------------------------------------------------------------- generated pages


def load_notation(path: Path) -> list[Symbol]:
    """The ``[[symbol]]`` rows of ``docs/site/notation.toml``, checked: every key present, nothing else."""
    rows = tomllib.loads(path.read_text(encoding="utf-8")).get("symbol", [])
    if not rows:
        raise SiteError(f"{path}: no [[symbol]] entries")
    symbols = []
    for i, row in enumerate(rows, 1):
        keys = {"math", "code", "meaning", "chapter"}
        if set(row) != keys:
            raise SiteError(f"{path}: [[symbol]] #{i} must have exactly the keys {sorted(keys)}, got {sorted(row)}")
        if not isinstance(row["chapter"], int) or not all(isinstance(row[k], str) for k in keys - {"chapter"}):
            raise SiteError(f"{path}: [[symbol]] #{i}: chapter must be an int and the other keys strings, got {row}")
        symbols.append(Symbol(**row))
    return symbols


def notation_page(symbols: Sequence[Symbol], book: Book) -> str:
    """The notation page: one table row per symbol, linked to the chapter that introduces it."""
    known = {c.number: c for c in book.chapters}
    lines = [
        "# Notation",
        "",
        "The symbols the chapters use, the names the code gives them, and where each first appears. Shapes are",
        "written channels-last, as bralib stores maps: (B, H, W, C).",
        "",
        "| symbol | in the code | meaning | introduced in |",
        "|---|---|---|---|",
    ]
    for s in symbols:
        if s.chapter not in known:
            raise SiteError(f"notation: ${s.math}$ names chapter {s.chapter}, which book.toml does not list")
        code = ", ".join(f"`{name.strip()}`" for name in s.code.split(",")) if s.code else "-"
        lines.append(f"| ${s.math}$ | {code} | {s.meaning} | {_chapter_link(known[s.chapter])} |")
    return "\n".join(lines) + "\n"


def map_page(book: Book) -> str:
    """The chapter map: what each chapter builds, what to read first, and how long it takes."""
    known = {c.number: c for c in book.chapters}
    total = sum(c.minutes or 0 for c in book.chapters)
    lines = [
        "# Chapter map",
        "",
        "Read the chapters in order, or jump in: each row names the chapters to read first. The times are for",
        f"reading and running a chapter, exercises not included (about {total} minutes in all; "
        f"{round(total / 60, 1):g} hours).",
        "",
        "```{figure} _static/chapter_map.svg",
        ":name: fig-chapter-map",
        ":alt: The chapters as boxes, with an arrow from each chapter to the chapters that build on it.",
        "",
        "The chapters and what each builds on: an arrow points from a chapter to one that needs it.",
        "```",
        "",
        "| # | chapter | read first | minutes | builds |",
        "|---|---|---|---|---|",
    ]
    for c in book.chapters:
        first = ", ".join(_chapter_link(known[n], short=True) for n in c.prerequisites) or "-"
        minutes = str(c.minutes) if c.minutes else "-"
        builds = ", ".join(f"`{m}`" for m in c.builds) or "-"
        lines.append(f"| {c.number} | {_chapter_link(c)} | {first} | {minutes} | {builds} |")
    lines += ["", "## Reading paths", ""]
    lines += [f"- {path}" for path in reading_paths(book)]
    return "\n".join(lines) + "\n"


def chapter_layers(book: Book) -> dict[int, int]:
    """Each chapter's column in the map: one more than its furthest prerequisite's (chapters without any: 0)."""
    layer: dict[int, int] = {}
    for c in book.chapters:  # reading order: prerequisites come first
        layer[c.number] = 1 + max((layer[n] for n in c.prerequisites), default=-1)
    return layer


def draw_chapter_map(book: Book, path: Path) -> Path:
    """The prerequisite graph as an SVG: a box per chapter, an arrow from each prerequisite, columns by depth.

    Text is drawn as paths (matplotlib's default for SVG), so the picture needs no font from anywhere.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")  # no display needed; the figure is only saved
    import matplotlib.pyplot as plt

    layer = chapter_layers(book)
    row: dict[int, int] = {}
    taken: set[tuple[int, int]] = set()
    for c in book.chapters:  # follow the latest prerequisite's row, so that a chain reads as one line
        r = row[max(c.prerequisites)] if c.prerequisites else 0
        while (layer[c.number], r) in taken:
            r += 1
        row[c.number] = r
        taken.add((layer[c.number], r))
    width, height = max(layer.values()) + 1, max(row.values()) + 1
    fig, ax = plt.subplots(figsize=(1.5 * width, 1.4 * height + 0.3))
    y_range = 1.5 * height + 0.8  # the y limits set below
    points_per_unit = (1.4 * height + 0.3) * 72 / y_range
    boxes = {}
    for c in book.chapters:
        minutes = f"\n{c.minutes} min" if c.minutes else ""
        label = "\n".join(textwrap.wrap(f"{c.number}. {c.title}", 13)) + minutes
        box = {"boxstyle": "round,pad=0.4", "facecolor": "#eef3fb", "edgecolor": "#3b6ea5"}
        x, y = layer[c.number], -1.5 * row[c.number]
        boxes[c.number] = ax.text(x, y, label, ha="center", va="center", fontsize=10, bbox=box)
    for c in book.chapters:
        for n in c.prerequisites:
            arrow = {"arrowstyle": "->", "color": "#555555", "shrinkA": 3, "shrinkB": 3}
            if layer[c.number] - layer[n] > 1 and row[c.number] > row[n]:
                # Down and across several columns: leave the box downwards, run under the target's row, come up.
                drop = 1.5 * (row[c.number] - row[n]) * points_per_unit + 14  # level with armB
                arrow["connectionstyle"] = f"arc,angleA=-90,angleB=-90,armA={drop:.0f},armB=14,rad=6"
                ax.annotate("", xy=(0.5, 0), xycoords=boxes[c.number], xytext=(0.5, 0), textcoords=boxes[n],
                            arrowprops=arrow)  # fmt: skip
                continue
            if layer[c.number] - layer[n] > 1:  # along a row: leave upwards, pass above the boxes, come down
                arm = 16 + 12 * (layer[n] % 2)  # neighbouring arcs at different heights, not on top of each other
                arrow["connectionstyle"] = f"arc,angleA=90,angleB=90,armA={arm},armB={arm},rad=6"
                ax.annotate("", xy=(0.5, 1), xycoords=boxes[c.number], xytext=(0.5, 1), textcoords=boxes[n],
                            arrowprops=arrow)  # fmt: skip
                continue
            ax.annotate(
                "", xy=(0, 0.5), xycoords=boxes[c.number], xytext=(1, 0.5), textcoords=boxes[n], arrowprops=arrow
            )
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-1.5 * height, 0.8)  # room for arrows bent above and below the rows
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.fonttype": "path"}):  # text as outlines: the picture needs no font
        # pad: matplotlib leaves the bent arrows out of the tight box. No date: the same bytes each build.
        fig.savefig(path, format="svg", bbox_inches="tight", pad_inches=0.45, metadata={"Date": None})
    plt.close(fig)
    return path


def reading_paths(book: Book) -> list[str]:
    """For each chapter, the shortest chain of prerequisites that leads to it, e.g. ``0 → 1 → 2 → 3``."""
    known = {c.number: c for c in book.chapters}
    paths = []
    for c in book.chapters:
        needed = sorted(_all_prerequisites(c.number, known))
        if needed:
            minutes = sum(known[n].minutes or 0 for n in [*needed, c.number])
            chain = " → ".join(str(n) for n in [*needed, c.number])
            paths.append(f"To read chapter {c.number}, {c.title}: {chain} (about {minutes} minutes)")
    return paths


def _all_prerequisites(number: int, known: dict[int, Chapter]) -> set[int]:
    seen: set[int] = set()
    todo = list(known[number].prerequisites)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(known[n].prerequisites)
    return seen


def _chapter_link(chapter: Chapter, short: bool = False) -> str:
    text = str(chapter.number) if short else f"{chapter.number}. {chapter.title}"
    return f"[{text}](chapters/{chapter.stem}.ipynb)"


def index_page(book: Book) -> str:
    """The front page: what the book is, how to read it, and the tables of contents Sphinx follows."""
    chapters = "\n".join(f"chapters/{c.stem}" for c in book.chapters)
    return f"""# {book.title}

{book.description}

Every chapter below was executed to build this site: its figures and printed numbers are the output of the
code on the page, and each `assert` cell passed. To run the chapters yourself, edit them and do the exercises,
clone the repository and follow its README (`bralib book build` and JupyterLab).

- The [chapter map](map.md) says what each chapter needs and how long it takes.
- The [notation](notation.md) page collects the symbols ($S$, $k$, $n = HW/S^2$, ...) and their names in the code.
- The [bibliography](bibliography.md) lists the works the chapters cite.
- Each chapter ends with exercises; their solutions are folded under the exercises: open one when you are done.
- The sliders of chapter 5's widgets move only in JupyterLab, where a kernel runs; here, the static figure above
  each widget shows its starting state.

```{{toctree}}
:caption: Chapters
:maxdepth: 1

{chapters}
```

```{{toctree}}
:caption: Reference
:maxdepth: 1

map
notation
bibliography
```
"""


# ---------------------------------------------------------------- chapters


def solution_blocks(solution_file: Path, names: Sequence[str]) -> dict[str, str]:
    """The source of each named top-level function in ``solution_file``, with its decorators and the comment
    lines right above it; the key ``""`` holds the file's other definitions (helpers the solutions share)."""
    text = solution_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks: dict[str, str] = {}
    others = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_docstring(node):
            continue
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        source = "\n".join(lines[start : node.end_lineno])
        name = getattr(node, "name", None)
        if name in names:
            blocks[name] = source
        else:
            others.append(source)
    missing = [name for name in names if name not in blocks]
    if missing:
        raise SiteError(f"{solution_file} has no top-level function(s) {missing}, which book.toml lists")
    if others:
        blocks[""] = "\n\n\n".join(others)
    return blocks


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def solutions_markdown(chapter: Chapter) -> str:
    """A "Solutions" section: one folded dropdown per exercise (MyST ``{dropdown}``, from sphinx-design)."""
    relative = chapter.solution_file.relative_to(chapter.root).as_posix()
    blocks = solution_blocks(chapter.solution_file, chapter.exercises)
    parts = [
        "## Solutions",
        "",
        f"The answers, from `{relative}`. Each is folded: try the exercise first, then click to compare.",
    ]
    titled = [(f"Solution: `{name}`", blocks[name]) for name in chapter.exercises]
    if "" in blocks:
        titled.append(("Helpers the solutions share", blocks[""]))
    for title, source in titled:
        fence = "`" * max(3, _longest_backtick_run(source) + 1)
        parts += ["", f"::::{{dropdown}} {title}", f"{fence}python", source, fence, "::::"]
    return "\n".join(parts) + "\n"


def _longest_backtick_run(text: str) -> int:
    run = best = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        best = max(best, run)
    return best


# What a chapter's outputs depend on besides its own cells: the library, the exercises and the stored results.
FINGERPRINTED = ("bralib", "exercises", "experiments", "benchmarks")


def sources_fingerprint(root: Path) -> str:
    """A digest of every file under ``FINGERPRINTED`` (bytes and paths): it changes when any of them changes.

    This module is left out: the chapters never run it, and editing the site should not re-execute the book."""
    import hashlib

    digest = hashlib.sha256()
    itself = Path(__file__).resolve()
    for folder in FINGERPRINTED:
        for path in sorted((root / folder).rglob("*")):
            if path.resolve() == itself or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            if path.is_file():
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def chapter_notebook(chapter: Chapter, fingerprint: str = ""):
    """The chapter as a notebook for the site (an nbformat node): the py:percent cells, a hidden first cell that
    runs it in the repository's ``chapters/`` folder (as nbval does), and the solutions at the end.

    The execution cache matches a chapter by its cells alone, so the hidden cell also carries ``fingerprint``
    (:func:`sources_fingerprint`): a change to the library re-executes every chapter instead of showing stale
    outputs.
    """
    import jupytext
    from nbformat.v4 import new_code_cell, new_markdown_cell

    nb = jupytext.read(chapter.source, fmt="py:percent")
    setup = new_code_cell(
        f"import os\n\nos.chdir({str(chapter.source.parent)!r})  # where the chapter runs under nbval\n"
        f"# library, exercises and stored results: {fingerprint or 'not fingerprinted'}",
        metadata={"tags": ["remove-cell"]},
    )
    nb.cells.insert(0, setup)
    if chapter.exercises:
        nb.cells.append(new_markdown_cell(solutions_markdown(chapter)))
    nb.metadata.setdefault("kernelspec", {"display_name": "Python 3 (ipykernel)", "language": "python",
                                          "name": "python3"})  # fmt: skip
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: the execution cache matches cells by content, not by random ids
    return nb


# ---------------------------------------------------------------- building


def _write_if_changed(path: Path, text: str) -> None:
    """Keep unchanged files' times, so that Sphinx re-reads only what changed."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_sources(book: Book, source_dir: Path, cache_dir: Path) -> list[Path]:
    """Fill ``source_dir`` with everything Sphinx reads; return the chapter notebooks written."""
    import nbformat

    missing = [c.file for c in book.chapters if not c.source.is_file()]
    if missing:
        raise SiteError(f"book.toml lists {', '.join(missing)}, which does not exist")
    fixed = book.root / SITE_SOURCES
    if not (fixed / "conf.py").is_file():
        raise SiteError(f"{fixed / 'conf.py'} is missing: the website's sources live in {SITE_SOURCES}/")
    for path in sorted(fixed.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            target = source_dir / path.relative_to(fixed)
            data = path.read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    _write_if_changed(source_dir / "references.bib", (book.root / BIBLIOGRAPHY).read_text(encoding="utf-8"))
    settings = {
        "title": book.title,
        "authors": list(book.authors),
        "version": book.version,
        "execution_cache": str(cache_dir.resolve()),
        "cell_timeout": CELL_TIMEOUT_SECONDS,
    }
    _write_if_changed(source_dir / "site_settings.json", json.dumps(settings, indent=2) + "\n")
    _write_if_changed(source_dir / "index.md", index_page(book))
    _write_if_changed(source_dir / "map.md", map_page(book))
    svg = draw_chapter_map(book, source_dir / "_build_tmp_map.svg")
    _write_if_changed(source_dir / "_static" / "chapter_map.svg", svg.read_text(encoding="utf-8"))
    svg.unlink()
    symbols = load_notation(fixed / "notation.toml")
    _write_if_changed(source_dir / "notation.md", notation_page(symbols, book))
    notebooks = []
    wanted = {f"{c.stem}.ipynb" for c in book.chapters}
    for stale in (source_dir / "chapters").glob("*.ipynb"):
        if stale.name not in wanted:  # a chapter renamed or removed since the last build
            stale.unlink()
    fingerprint = sources_fingerprint(book.root)
    for chapter in book.chapters:
        target = source_dir / "chapters" / f"{chapter.stem}.ipynb"
        _write_if_changed(target, nbformat.writes(chapter_notebook(chapter, fingerprint)) + "\n")
        notebooks.append(target)
    return notebooks


def missing_packages() -> list[str]:
    """The website's packages that are not installed (the ``[site]`` extra)."""
    import importlib.util

    return [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]


def build_site(
    book: Book,
    out: Path | None = None,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Build the website into ``out`` (default ``build/site`` beside book.toml); return its ``index.html``.

    ``jobs`` > 1 lets Sphinx read (and so execute) that many chapters at once. Raises :class:`SiteError` with
    Sphinx's output when a chapter fails or Sphinx reports an error.
    """
    missing = missing_packages()
    if missing:
        raise SiteError(f"the website needs {', '.join(missing)}: install the site extra, pip install -e '.[site]'")
    out = (out or book.root / DEFAULT_BUILD).resolve()
    source_dir, html_dir = out / "src", out / "html"
    say = progress or (lambda line: None)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out / ".lock"):  # two builds into one folder (two test workers) take turns
        write_sources(book, source_dir, out / "jupyter_cache")
        _limit_cache(out / "jupyter_cache", 2 * len(book.chapters))
        say(f"sources written to {source_dir}; running Sphinx (chapters not in the cache are executed) ...")
        command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", str(jobs), "-d", str(out / "doctrees"),
                   "-w", str(out / "warnings.txt"), str(source_dir), str(html_dir)]  # fmt: skip
        done = subprocess.run(command, cwd=source_dir, capture_output=True, text=True)
    if done.returncode != 0:
        raise SiteError(f"Sphinx failed (exit code {done.returncode}):\n{_failure_report(done.stdout + done.stderr)}")
    index = html_dir / "index.html"
    if not index.is_file():
        raise SiteError(f"Sphinx finished but wrote no {index}")
    say(f"built in {time.perf_counter() - start:.0f} s")
    return index


def _limit_cache(cache_dir: Path, entries: int) -> None:
    """Keep at most ``entries`` executed notebooks (the oldest go first), not jupyter-cache's default 1000:
    every change to a chapter or to the library adds one, a few MB each with its pictures."""
    from jupyter_cache import get_cache  # installed with myst-nb

    cache = get_cache(cache_dir)
    if cache.get_cache_limit() != entries:
        cache.change_cache_limit(entries)


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (POSIX; elsewhere builds are not serialised)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _failure_report(output: str, max_lines: int = 60) -> str:
    """What went wrong, from Sphinx's output: a failing chapter's cell and error when there is one.

    Sphinx prints only the start of an exception raised by an extension and saves the rest to a log file,
    whose path it names; a chapter's CellExecutionError (the cell, its output and traceback) is in that file.
    """
    text = ANSI_ESCAPE.sub("", output)
    saved = re.search(r"The full traceback has been saved in:?\s*(\S+)", text)
    if saved and Path(saved.group(1)).is_file():
        log = ANSI_ESCAPE.sub("", Path(saved.group(1)).read_text(encoding="utf-8", errors="replace"))
        cell = log.find("An error occurred while executing the following cell")
        if cell >= 0:
            end = log.find("The above exception was the direct cause", cell)
            chapter = re.search(r"ExecutionError: (\S+\.ipynb)", log)
            where = f"chapter {Path(chapter.group(1)).stem} failed: " if chapter else ""
            return where + log[cell : end if end > 0 else None].strip()
    return "\n".join(text.strip().splitlines()[-max_lines:])


def warnings(out: Path) -> list[str]:
    """The warnings of the last build into ``out`` (Sphinx's ``-w`` file), one per entry."""
    path = out / "warnings.txt"
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if "WARNING" in line or "ERROR" in line]


def clean(out: Path) -> None:
    """Remove a build folder, execution cache included."""
    shutil.rmtree(out, ignore_errors=True)
