"""Notebook tooling: generate ``.ipynb`` from the chapters' py:percent sources, run them under nbval, draw tables.

jupytext and pytest are imported inside the functions that need them, so ``bralib book list`` stays fast.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bralib.book.manifest import Book, Chapter

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
TOC_START = "<!-- toc:start: generated from book.toml by `bralib book toc --write`; do not edit by hand -->"
TOC_END = "<!-- toc:end -->"
NBVAL_ARGS = ("--nbval-lax", "--nbval-current-env")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- building


def build_notebook(source: Path, notebook: Path) -> Path:
    """Write ``notebook`` (.ipynb, no outputs) from the py:percent ``source``.

    The notebook gets the source's modification time: JupyterLab's jupytext pairing refuses to open a pair
    whose .ipynb looks newer than its text file, and a notebook older than its source means "stale".
    """
    import jupytext  # heavy: only when building

    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata.setdefault("kernelspec", KERNELSPEC)
    # Write next to the target and rename, so a reader (nbval, JupyterLab) never sees half a file.
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=notebook.parent)
    os.close(fd)
    try:
        jupytext.write(nb, tmp, fmt="ipynb")
        stat = source.stat()
        os.chmod(tmp, stat.st_mode & 0o777)  # mkstemp makes it private; give it the source's permissions
        os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(tmp, notebook)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return notebook


def build(chapters: Sequence[Chapter]) -> list[Path]:
    """Generate every chapter's notebook; a missing source is an error naming the manifest entry."""
    missing = [c.file for c in chapters if not c.source.is_file()]
    if missing:
        raise FileNotFoundError(f"book.toml lists chapter file(s) that do not exist: {', '.join(missing)}")
    return [build_notebook(c.source, c.notebook) for c in chapters]


def is_stale(chapter: Chapter) -> bool:
    """True when the notebook is missing or older than its py:percent source."""
    return not chapter.notebook.exists() or chapter.notebook.stat().st_mtime_ns < chapter.source.stat().st_mtime_ns


# ---------------------------------------------------------------- checking


@dataclass
class ChapterResult:
    chapter: Chapter
    status: str  # "passed", "failed", "over budget" or "timed out"
    seconds: float  # CPU seconds of the run (pytest and its kernel): what the chapter costs, judged by the budget
    output: str
    wall_seconds: float = 0.0  # wall-clock seconds, which also count whatever else the machine was doing

    @property
    def ok(self) -> bool:
        return self.status == "passed"


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_chapter(chapter: Chapter, budget_seconds: float) -> ChapterResult:
    """Execute one built chapter notebook under nbval in a fresh pytest process and measure its cost.

    The budget judges CPU time (of pytest and the kernel it starts), not wall time: on a busy machine a chapter
    waits for the processor without costing more. A wall-clock guard only stops a runaway chapter (an endless
    loop), far past any budget, and reports it as "timed out".
    """
    command = [sys.executable, "-m", "pytest", *NBVAL_ARGS, "-p", "no:cacheprovider", "-q", "--no-header", "-rf"]
    command.append(str(chapter.notebook.relative_to(chapter.root)))
    guard = max(600.0, 5 * budget_seconds)
    cpu_start, start = _children_cpu_seconds(), time.perf_counter()
    try:
        done = subprocess.run(command, cwd=chapter.root, capture_output=True, text=True, timeout=guard)
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        wall = time.perf_counter() - start
        return ChapterResult(chapter, "timed out", wall, output + f"\nstopped after {guard:g} s of wall time", wall)
    wall, seconds = time.perf_counter() - start, _children_cpu_seconds() - cpu_start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        status = "failed"  # includes pytest's 5, "no tests ran": a chapter with no code cells checks nothing
    elif seconds > budget_seconds:
        status = "over budget"
    else:
        status = "passed"
    return ChapterResult(chapter, status, seconds, output, wall)


def check(
    book: Book,
    chapters: Sequence[Chapter],
    progress: Callable[[str], None] | None = None,
) -> list[ChapterResult]:
    """Build and run ``chapters``, reporting progress line by line."""
    build(chapters)
    results = []
    for i, chapter in enumerate(chapters, 1):
        if progress:
            progress(f"[{i}/{len(chapters)}] {chapter.notebook.relative_to(book.root)} ...")
        result = run_chapter(chapter, book.budget_seconds)
        if progress:
            progress(f"[{i}/{len(chapters)}] {chapter.stem}: {result.status}, {result.seconds:.1f} s of CPU"
                     f" ({result.wall_seconds:.1f} s wall)")  # fmt: skip
        results.append(result)
    return results


def failure_summary(result: ChapterResult, max_lines: int = 40) -> str:
    """The end of pytest's output for a chapter that did not pass: names the failing cells."""
    lines = ANSI_ESCAPE.sub("", result.output).rstrip().splitlines()  # nbval and IPython colour their tracebacks
    failed_cells = sorted(set(re.findall(r"::(Cell \d+)", "\n".join(line for line in lines if "FAILED" in line))))
    head = f"--- {result.chapter.stem}: {result.status}"
    if failed_cells:
        head += f" (failing: {', '.join(failed_cells)})"
    return "\n".join([head, *lines[-max_lines:]])


# ---------------------------------------------------------------- tables


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def contents_table(book: Book) -> str:
    """The table of contents for a terminal."""
    rows = [
        (f"{c.number:02d}", c.title, ", ".join(c.builds) or "-", ", ".join(c.exercises) or "-", c.file)
        for c in book.chapters
    ]
    return format_table(("#", "title", "builds", "exercises", "file"), rows)


def results_table(results: Sequence[ChapterResult], budget_seconds: float) -> str:
    rows = [
        (r.chapter.stem, r.status, f"{r.seconds:.1f}", f"{budget_seconds:g}", f"{r.wall_seconds:.1f}") for r in results
    ]
    return format_table(("chapter", "status", "cpu seconds", "budget", "wall seconds"), rows)


def markdown_toc(book: Book) -> str:
    """The table of contents as Markdown, exactly as the README holds it between the toc markers."""
    lines = ["| # | chapter | builds | exercises |", "|---|---|---|---|"]
    for c in book.chapters:
        builds = ", ".join(f"`{m}`" for m in c.builds) or "-"
        exercises = ", ".join(f"`{e}`" for e in c.exercises) or "-"
        lines.append(f"| {c.number} | [{c.title}]({c.file}) | {builds} | {exercises} |")
    return "\n".join(lines)


def readme_toc(readme_text: str) -> str:
    """The text between the README's toc markers, without surrounding blank lines."""
    start, end = readme_text.find(TOC_START), readme_text.find(TOC_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no table of contents between the markers {TOC_START!r} and {TOC_END!r}")
    return readme_text[start + len(TOC_START) : end].strip("\n")


def write_readme_toc(readme: Path, book: Book) -> bool:
    """Replace the README's table of contents with the manifest's; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    readme_toc(text)  # raises a clear error when the markers are missing
    start, end = text.index(TOC_START) + len(TOC_START), text.index(TOC_END)
    new_text = f"{text[:start]}\n{markdown_toc(book)}\n{text[end:]}"
    if new_text == text:
        return False
    readme.write_text(new_text, encoding="utf-8")
    return True
