"""Shared fixtures: where the repository is, and its book manifest.

The chapter time budget is enforced by the plugin bralib.book.pytest_budget, loaded through pyproject.toml's
``addopts`` so that it also applies when only chapter notebooks are collected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bralib.book import Book, load_book

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def book() -> Book:
    return load_book(REPO_ROOT / "book.toml")


@pytest.fixture(scope="session")
def run_python():
    """Run ``python ARGS...`` with this interpreter in a subprocess: see :func:`_run_python`."""
    return _run_python


def _run_python(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python ARGS...`` in a subprocess with this interpreter, one thread, output captured as text."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)  # a nested pytest must not think it is an xdist worker
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
