"""pytest plugin: fail the run when a chapter notebook costs more than the book's time budget.

Enabled for this repository by ``-p bralib.book.pytest_budget`` in pyproject.toml's pytest ``addopts``.

What is measured is the chapter's own cost: the **CPU time of its kernel process** (user + system, children
included), read from ``/proc`` after each cell. Wall-clock time would also count whatever else the machine is
doing: on a shared 2-core machine with other work beside it, a chapter that costs 60 s of CPU can take 180 s.
The wall time is reported beside it. Where ``/proc`` is missing (not Linux) the budget falls back to the summed
wall durations of the cells (setup + call + teardown, so kernel start-up counts).

Under pytest-xdist the workers read the CPU time (their kernels are their children) and attach it to each cell's
report; the controller, which receives every worker's reports, adds up and judges, so the numbers are whole
even when a chapter's cells ran on another process.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

from bralib.book.manifest import MANIFEST_NAME, Book, load_book

CPU_PROPERTY = "bralib_kernel_cpu_seconds"


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(KernelCpuRecorder(), "bralib-kernel-cpu")
    if hasattr(config, "workerinput"):  # an xdist worker: the controller adds up the reports
        return
    manifest = Path(config.rootpath) / MANIFEST_NAME
    if manifest.is_file():
        config.pluginmanager.register(ChapterBudget(load_book(manifest)), "bralib-chapter-budget")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and of its waited-for children; None where /proc has no answer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)", which may itself hold spaces
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])  # fields 14-17 of proc(5)
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def kernel_pid(item: pytest.Item) -> int | None:
    """The pid of the kernel that runs an nbval cell, or None for any other test."""
    kernel = getattr(item.parent, "kernel", None)
    process = getattr(getattr(getattr(kernel, "km", None), "provisioner", None), "process", None)
    return getattr(process, "pid", None)


class KernelCpuRecorder:
    """Attaches the kernel's CPU seconds so far to the report of every nbval cell (on whichever process runs it)."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        pid = kernel_pid(item)
        seconds = process_cpu_seconds(pid) if pid is not None else None
        if seconds is not None:
            outcome.get_result().user_properties.append((CPU_PROPERTY, seconds))


class ChapterBudget:
    """Adds up each chapter's costs and enforces ``[check] budget_seconds``."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.notebooks = {c.notebook.relative_to(book.root).as_posix(): c.stem for c in book.chapters}
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::", 1)[0]
        if path not in self.notebooks:
            return
        stem = self.notebooks[path]
        self.wall[stem] += report.duration
        for name, value in report.user_properties:
            if name == CPU_PROPERTY:  # the kernel's total so far: the chapter's cost is the largest
                self.cpu[stem] = max(self.cpu.get(stem, 0.0), float(value))

    def cost(self, stem: str) -> float:
        """The seconds judged against the budget: kernel CPU time where measured, else wall time."""
        return self.cpu.get(stem, self.wall[stem])

    def over_budget(self) -> dict[str, float]:
        costs = {stem: self.cost(stem) for stem in self.wall}
        return {stem: s for stem, s in costs.items() if s > self.book.budget_seconds}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.over_budget() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.wall:
            return
        over = self.over_budget()
        terminalreporter.section("chapter time budget (kernel CPU seconds; wall seconds beside)")
        for stem in sorted(self.wall):
            verdict = "OVER BUDGET" if stem in over else "ok"
            kind = "cpu" if stem in self.cpu else "wall"
            terminalreporter.line(
                f"{stem:<32} {self.cost(stem):7.1f} s {kind} of {self.book.budget_seconds:g} s  {verdict:<11}"
                f" (wall {self.wall[stem]:.1f} s)"
            )
        if over:
            names = ", ".join(sorted(over))
            terminalreporter.line(
                f"FAILED: chapter(s) over the {self.book.budget_seconds:g} s budget of book.toml: {names}", red=True
            )
