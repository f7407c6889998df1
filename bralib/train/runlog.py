"""The run's JSON-lines log: one line per optimizer step and per evaluation, written by rank 0 only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class RunLog:
    """Append JSON records to ``path``; ``resume_step`` keeps the lines up to that step and drops the rest.

    A run killed after its last checkpoint has logged steps that the resumed run will redo: they are
    removed so the log reads as one uninterrupted run.
    """

    def __init__(self, path: str | Path, *, enabled: bool = True, resume_step: int | None = None) -> None:
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, **values, "time": round(time.time(), 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:  # a line cut short by the kill
        return float("inf")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's log (``path`` is the file or the run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {str(path)!r}")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
