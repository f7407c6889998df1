"""One training run per output directory: ``OUT/.lock`` holds the pid and host of the run writing there.

Two runs on one ``--out`` would overwrite each other's checkpoint and log. The lock file is created
exclusively (``O_CREAT | O_EXCL``); a second run finds it and is refused with the first one's pid. A lock
left behind by a run that died (its pid no longer lives on this host) is taken over.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from bralib.errors import UsageError

LOCK_NAME = ".lock"


class RunLockedError(UsageError):
    """Another process is training into the same output directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """``with RunLock(out):`` holds ``out/.lock`` for the block; refuses when another live run holds it."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):  # the second try follows the removal of a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record + "\n")
            self.held = True
            return
        raise RunLockedError(f"cannot take the lock {str(self.path)!r}: another run keeps creating it")

    def _refuse_or_clear(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return  # released meanwhile
        except (ValueError, KeyError, TypeError, OSError):
            owner, pid, host = None, None, None
        if owner is not None and host == socket.gethostname() and not _alive(pid):
            self.path.unlink(missing_ok=True)  # its run died without releasing it
            return
        who = f"process {pid} on host {host!r}" if owner is not None else "an unknown process (unreadable lock file)"
        raise RunLockedError(
            f"another training run ({who}) is writing to {str(self.path.parent)!r}: wait for it to finish, choose "
            f"another --out, or, if no such run is alive, delete {str(self.path)!r}"
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
