"""Reading and writing torch files safely: a checkpoint is data, never code, and a damaged file never loads.

Every loader of bralib (training checkpoints, ``--init``, ``--resume``, ``bralib eval``, exported weights,
the official BiFormer weights) goes through :func:`load_torch_file`, which before ``torch.load``:

- checks the file exists, is not empty and is a zip archive written by ``torch.save`` (or, where allowed,
  the legacy pickle format), so an empty, truncated or text file gets a sentence instead of ``EOFError``;
- verifies the CRC-32 of every entry of the archive (torch's zip reader does not: flipped bytes inside a
  tensor would load silently as other numbers), naming the damaged entry;
- verifies the SHA-256 in ``<file>.sha256`` when that file exists;
- loads with ``weights_only=True`` (tensors and plain values, never arbitrary pickled code), and turns a
  refusal into one sentence naming the refused global, without torch's advice to turn the check off.

:func:`save_torch_file` writes atomically: a temporary file, flushed to disk, renamed over the old one; on
any failure (a full disk) the temporary file is removed and the old file is left as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from bralib.errors import CheckpointError, CheckpointNotFoundError, WriteError

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"  # torch's legacy (pre-1.6) format starts with a pickled magic number
CHUNK = 1 << 20


def sha256_path(path: str | os.PathLike) -> Path:
    """Where the SHA-256 of ``path`` is stored: ``<path>.sha256``, in ``sha256sum`` format."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sha256(path: str | os.PathLike) -> str:
    """Store the SHA-256 of ``path`` next to it (``<path>.sha256``, as ``sha256sum`` writes it); returns it."""
    path = Path(path)
    digest = file_sha256(path)
    write_text_atomic(sha256_path(path), f"{digest}  {path.name}\n")
    return digest


def verify_sha256(path: str | os.PathLike, *, what: str = "file") -> None:
    """When ``<path>.sha256`` exists, check that ``path`` still has that SHA-256."""
    path, record = Path(path), sha256_path(path)
    if not record.is_file():
        return
    fields = record.read_text(errors="replace").split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise CheckpointError(f"{str(record)!r} does not hold a SHA-256 (expected '<64 hex digits>  {path.name}')")
    actual = file_sha256(path)
    if actual != fields[0].lower():
        raise CheckpointError(
            f"{what} {str(path)!r} is damaged or was changed: its SHA-256 is {actual}, but {record.name} "
            f"records {fields[0].lower()}"
        )


def verify_archive(path: str | os.PathLike, *, what: str = "file") -> None:
    """Check that ``path`` is a readable zip archive whose every entry has the CRC-32 its directory records."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise CheckpointError(
            f"{what} {str(path)!r} is truncated or damaged: its zip directory cannot be read ({err}; "
            f"{path.stat().st_size} bytes). Copy or download it again"
        ) from err
    with archive:
        for info in archive.infolist():
            try:
                with archive.open(info) as member:
                    while member.read(CHUNK):
                        pass
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as err:
                raise CheckpointError(
                    f"{what} {str(path)!r} is damaged: entry {info.filename!r} fails its CRC-32 check ({err}). "
                    "Copy or download it again"
                ) from err


def _check_kind(path: Path, what: str, allow_legacy: bool) -> bool:
    """Whether ``path`` is a zip archive; raises for a missing, empty or non-torch file."""
    if not path.exists():
        raise CheckpointNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} is a directory, expected a file written by torch.save")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(
            f"{what} {str(path)!r} is empty (0 bytes), expected a file written by torch.save; was its writing "
            "or copying cut short?"
        )
    if head.startswith(ZIP_MAGIC):
        return True
    if allow_legacy and head.startswith(PICKLE_MAGIC):
        return False
    looks = "a text file" if _is_text(head) else f"a file starting with {head[:8]!r}"
    raise CheckpointError(
        f"{what} {str(path)!r} is not a PyTorch file: it is {looks}, expected a zip archive written by torch.save"
    )


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8", errors="strict")
    except UnicodeDecodeError:  # possibly a multi-byte character cut at the end: judge the rest
        text = head[:-4].decode("utf-8", errors="replace")
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text) and "\ufffd" not in text


def refused_global(err: Exception) -> str:
    """The part of torch's weights-only refusal that says what it refused, without its advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"the global {match.group(1)} is not allowed"
    match = re.search(r"unsupported GLOBAL ([\w.]+) whose module ([\w.]+) is blocked", text)
    if match:
        return f"the global {match.group(1)} is not allowed (module {match.group(2)} is blocked)"
    for line in text.splitlines():
        if ("Unsupported" in line or "unsupported" in line) and "weights_only" not in line:
            return line.strip().rstrip(".")
    return "it holds something other than tensors and plain values"


def load_torch_file(
    path: str | os.PathLike,
    *,
    what: str = "checkpoint",
    allowed_globals: Iterable[type] = (),
    allow_legacy: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, after checking the file is whole.

    Args:
        what: how the messages name the file ("checkpoint", "weights file", "--init checkpoint", ...).
        allowed_globals: classes the file may hold besides plain values (the official checkpoints store an
            ``argparse.Namespace``); passed to ``torch.serialization.safe_globals``.
        allow_legacy: also read torch's legacy (pre-1.6, not zip) format, which has no checksums to verify.

    Raises:
        CheckpointError: missing, empty, not a torch file, truncated, a CRC-32 or SHA-256 mismatch, or an
            object the weights-only loader refuses; the message names the file and what was expected.
    """
    path = Path(path)
    if _check_kind(path, what, allow_legacy):
        verify_archive(path, what=what)
    verify_sha256(path, what=what)
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{what} {str(path)!r} was refused: {refused_global(err)}. bralib loads files as weights only "
            "(tensors, numbers, strings, lists and dicts), because a checkpoint is data, never code"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read by torch.load ({first}); expected a file written by torch.save"
        ) from err


def save_torch_file(path: str | os.PathLike, obj: Any, *, sha256: bool = False, what: str = "checkpoint") -> None:
    """``torch.save(obj)`` to ``path`` atomically; with ``sha256`` also store ``<path>.sha256``.

    Written to ``<path>.tmp``, flushed to disk and renamed over ``path``: a process killed mid-write leaves
    the previous file intact. On an error (a full disk) the temporary file is removed and
    :class:`~bralib.errors.WriteError` says what happened; the previous file is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
        error = WriteError(
            f"cannot write {what} {str(path)!r}: {reason} ({err}); the previous file, if any, is unchanged"
        )
        error.errno = err.errno
        raise error from err
    _fsync_directory(path.parent)
    if sha256:
        write_sha256(path)
    else:
        sha256_path(path).unlink(missing_ok=True)  # a record of the file this one replaced would now be wrong


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written file, even when the
    disk fills up (then :class:`~bralib.errors.WriteError`, and the temporary file is removed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        error = WriteError(
            f"cannot write {str(path)!r}: {err.strerror or err}; the previous file, if any, is unchanged"
        )
        error.errno = err.errno
        raise error from err


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
