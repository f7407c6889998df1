"""pytest plugin: fail the run when a chapter notebook takes longer than the book's time budget.

Enabled for this repository by ``-p bralib.book.pytest_budget`` in pyproject.toml's pytest ``addopts``.
It sums the durations (setup + call + teardown, so kernel start-up counts) of every nbval cell of each
chapter listed in the ``book.toml`` at pytest's root folder, then prints a table and turns a green run red
when a chapter is over budget. Under pytest-xdist only the controller acts: it receives every worker's
reports, so the sums are whole even when a chapter's cells ran on another process.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from bralib.book.manifest import MANIFEST_NAME, Book, load_book


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller adds up the reports
        return
    manifest = Path(config.rootpath) / MANIFEST_NAME
    if manifest.is_file():
        config.pluginmanager.register(ChapterBudget(load_book(manifest)), "bralib-chapter-budget")


class ChapterBudget:
    """Adds up each chapter's cell durations and enforces ``[check] budget_seconds``."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.notebooks = {c.notebook.relative_to(book.root).as_posix(): c.stem for c in book.chapters}
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::", 1)[0]
        if path in self.notebooks:
            self.seconds[self.notebooks[path]] += report.duration

    def over_budget(self) -> dict[str, float]:
        return {stem: s for stem, s in self.seconds.items() if s > self.book.budget_seconds}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.over_budget() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seconds:
            return
        over = self.over_budget()
        terminalreporter.section("chapter time budget")
        for stem, seconds in sorted(self.seconds.items()):
            verdict = "OVER BUDGET" if stem in over else "ok"
            terminalreporter.line(f"{stem:<32} {seconds:7.1f} s of {self.book.budget_seconds:g} s  {verdict}")
        if over:
            names = ", ".join(sorted(over))
            terminalreporter.line(
                f"FAILED: chapter(s) over the {self.book.budget_seconds:g} s budget of book.toml: {names}", red=True
            )
