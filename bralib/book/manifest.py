"""The book manifest, ``book.toml``: what the book is and which chapters it has, in reading order.

Schema (every key required unless marked optional; unknown keys are errors, to catch typos)::

    [book]
    title = "..."            # str
    authors = ["..."]        # list of str
    version = "0.1.0"        # str
    description = "..."      # str
    repository = "..."       # str

    [check]
    budget_seconds = 120     # number > 0: the most one chapter may take under nbval

    [[chapter]]              # one per chapter, in reading order; append new ones at the end of the file
    file = "chapters/NN_slug.py"   # the jupytext py:percent source
    title = "..."                  # str
    builds = ["bralib.ops"]        # the bralib modules the chapter builds (list of str, may be empty)
    exercises = ["name"]           # exercise names: functions in exercises/NN_slug.py (list of str, may be empty)
    prerequisites = [3, 4]         # optional: numbers of earlier chapters to read first (default: none)
    minutes = 30                   # optional: reading time in minutes, exercises not included (int > 0)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "book.toml"
CHAPTER_FILE = re.compile(r"^chapters/(?P<number>\d{2})_[a-z0-9_]+\.py$")
EXERCISE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

# table -> {key: (python type(s), what to tell the author)}
BOOK_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "title": (str, "a string"),
    "authors": (list, "a list of strings"),
    "version": (str, "a string"),
    "description": (str, "a string"),
    "repository": (str, "a string"),
}
CHECK_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "budget_seconds": ((int, float), "a positive number of seconds"),
}
CHAPTER_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "file": (str, 'a string like "chapters/NN_slug.py"'),
    "title": (str, "a string"),
    "builds": (list, 'a list of module names like ["bralib.ops"]'),
    "exercises": (list, "a list of exercise names (function names in exercises/NN_slug.py)"),
}
# Optional keys: the website's chapter map (bralib book html) shows them.
OPTIONAL_CHAPTER_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "prerequisites": (list, "a list of the numbers of earlier chapters, like [3, 4]"),
    "minutes": (int, "a whole number of minutes > 0"),
}
LIST_OF_STR_KEYS = {"authors", "builds", "exercises"}


class ManifestError(ValueError):
    """book.toml is missing, unreadable or does not follow the schema; the message says where."""


@dataclass(frozen=True)
class Chapter:
    """One ``[[chapter]]`` entry. Paths are relative to the book's root folder."""

    file: str
    title: str
    builds: tuple[str, ...]
    exercises: tuple[str, ...]
    root: Path
    prerequisites: tuple[int, ...] = ()  # numbers of earlier chapters to read first
    minutes: int | None = None  # reading time; None when book.toml does not say

    @property
    def number(self) -> int:
        return int(Path(self.file).name[:2])

    @property
    def stem(self) -> str:
        """``NN_slug``: names the chapter, its notebook and its exercise files."""
        return Path(self.file).stem

    @property
    def source(self) -> Path:
        return self.root / self.file

    @property
    def notebook(self) -> Path:
        return self.source.with_suffix(".ipynb")

    @property
    def exercise_file(self) -> Path:
        return self.root / "exercises" / f"{self.stem}.py"

    @property
    def solution_file(self) -> Path:
        return self.root / "exercises" / "solutions" / f"{self.stem}.py"


@dataclass(frozen=True)
class Book:
    """The parsed manifest."""

    title: str
    authors: tuple[str, ...]
    version: str
    description: str
    repository: str
    budget_seconds: float
    chapters: tuple[Chapter, ...]
    root: Path

    def chapter_for_exercise(self, name: str) -> Chapter:
        """The chapter that lists exercise ``name``."""
        for chapter in self.chapters:
            if name in chapter.exercises:
                return chapter
        raise KeyError(f"no chapter in {self.root / MANIFEST_NAME} lists an exercise named {name!r}")

    @property
    def exercise_names(self) -> list[str]:
        return [name for chapter in self.chapters for name in chapter.exercises]

    def select(self, wanted: list[str] | None) -> list[Chapter]:
        """Chapters picked by number (``3``, ``03``), stem (``03_routing``) or file; all when ``wanted`` is empty."""
        if not wanted:
            return list(self.chapters)
        picked = []
        for word in wanted:
            matches = [c for c in self.chapters if word in (c.stem, c.file, c.notebook.name) or _same_number(word, c)]
            if not matches:
                known = ", ".join(c.stem for c in self.chapters)
                raise ManifestError(f"no chapter matches {word!r}; chapters are: {known}")
            picked.extend(c for c in matches if c not in picked)
        return picked


def _same_number(word: str, chapter: Chapter) -> bool:
    return word.isdigit() and int(word) == chapter.number


def find_manifest(start: Path | None = None) -> Path:
    """The nearest ``book.toml`` in ``start`` (default: the current folder) or one of its parents."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / MANIFEST_NAME).is_file():
            return folder / MANIFEST_NAME
    raise ManifestError(
        f"no {MANIFEST_NAME} in {start} or any folder above it: run this inside a checkout of the bralib "
        "repository (the book lives there, not in the installed package)"
    )


def load_book(path: Path | str | None = None) -> Book:
    """Read and validate a manifest: ``path`` (a file or a folder holding one) or the nearest ``book.toml``."""
    if path is None:
        path = find_manifest()
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ManifestError(f"cannot read the book manifest {path}: {err.strerror}") from err
    return parse_book(text, path)


def parse_book(text: str, path: Path) -> Book:
    """Validate manifest ``text`` read from ``path`` (used in messages and as the book's root)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # tomllib's message already ends in "(at line L, column C)".
        raise ManifestError(f"{path}: not valid TOML: {err}") from err
    locate = _Locator(text, path)
    unknown = set(data) - {"book", "check", "chapter"}
    if unknown:
        message = f"unknown top-level key(s) {sorted(unknown)}; allowed: book, check, chapter"
        raise ManifestError(locate.table_error(None, message))
    book = _table(data, "book", locate)
    _check_keys(book, BOOK_KEYS, "[book]", locate, locate.table_line("[book]"))
    check = _table(data, "check", locate)
    _check_keys(check, CHECK_KEYS, "[check]", locate, locate.table_line("[check]"))
    if check["budget_seconds"] <= 0 or isinstance(check["budget_seconds"], bool):
        message = f"[check] budget_seconds must be a positive number of seconds, got {check['budget_seconds']!r}"
        raise ManifestError(locate.key_error(locate.table_line("[check]"), "budget_seconds", message))
    entries = data.get("chapter", [])
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path}: needs at least one [[chapter]] entry (array of tables)")
    chapters = [_chapter(entry, i, locate, path.parent) for i, entry in enumerate(entries)]
    _check_unique(chapters, locate)
    _check_prerequisites(chapters, locate)
    return Book(
        title=book["title"],
        authors=tuple(book["authors"]),
        version=book["version"],
        description=book["description"],
        repository=book["repository"],
        budget_seconds=float(check["budget_seconds"]),
        chapters=tuple(chapters),
        root=path.parent.resolve(),
    )


def _table(data: dict[str, Any], name: str, locate: _Locator) -> dict[str, Any]:
    if not isinstance(data.get(name), dict):
        raise ManifestError(locate.table_error(None, f"missing the [{name}] table"))
    return data[name]


def _chapter(entry: dict[str, Any], index: int, locate: _Locator, root: Path) -> Chapter:
    line = locate.chapter_line(index)
    if not isinstance(entry, dict):
        message = f"chapter #{index + 1} must be a [[chapter]] table, got {entry!r}"
        raise ManifestError(locate.table_error(line, message))
    label = f"[[chapter]] #{index + 1}" + (f" ({entry['file']})" if isinstance(entry.get("file"), str) else "")
    _check_keys(entry, CHAPTER_KEYS, label, locate, line, optional=OPTIONAL_CHAPTER_KEYS)
    if not CHAPTER_FILE.match(entry["file"]):
        message = (
            f'{label}: file must look like "chapters/NN_slug.py" (two digits, lower-case slug), got {entry["file"]!r}'
        )
        raise ManifestError(locate.key_error(line, "file", message))
    for name in entry["exercises"]:
        if not EXERCISE_NAME.match(name):
            message = f"{label}: exercise {name!r} is not a Python function name"
            raise ManifestError(locate.key_error(line, "exercises", message))
    number = int(Path(entry["file"]).name[:2])
    prerequisites = entry.get("prerequisites", [])
    for item in prerequisites:
        if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item < number:
            message = f"{label}: prerequisites must list numbers of earlier chapters (0 to {number - 1}), got {item!r}"
            raise ManifestError(locate.key_error(line, "prerequisites", message))
    if len(set(prerequisites)) != len(prerequisites):
        message = f"{label}: prerequisites lists a chapter twice: {prerequisites!r}"
        raise ManifestError(locate.key_error(line, "prerequisites", message))
    minutes = entry.get("minutes")
    if minutes is not None and minutes <= 0:
        message = f"{label}: minutes must be a whole number of minutes > 0, got {minutes!r}"
        raise ManifestError(locate.key_error(line, "minutes", message))
    return Chapter(
        file=entry["file"],
        title=entry["title"],
        builds=tuple(entry["builds"]),
        exercises=tuple(entry["exercises"]),
        root=root.resolve(),
        prerequisites=tuple(prerequisites),
        minutes=minutes,
    )


def _check_keys(
    table: dict[str, Any],
    schema: dict[str, tuple[Any, str]],
    label: str,
    locate: _Locator,
    line: int | None,
    optional: dict[str, tuple[Any, str]] | None = None,
) -> None:
    """Every key of ``schema`` present, those of ``optional`` maybe, each with the right type, and no others."""
    optional = optional or {}
    for key, (kind, described) in {**schema, **optional}.items():
        if key not in table:
            if key in optional:
                continue
            raise ManifestError(locate.table_error(line, f"{label} is missing the key {key!r} ({described})"))
        value = table[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and key in LIST_OF_STR_KEYS:
            ok = all(isinstance(item, str) for item in value)
        if not ok:
            raise ManifestError(locate.key_error(line, key, f"{label}: {key} must be {described}, got {value!r}"))
    unknown = sorted(set(table) - set(schema) - set(optional))
    if unknown:
        allowed = sorted(schema) + [f"{key} (optional)" for key in sorted(optional)]
        raise ManifestError(locate.table_error(line, f"{label} has unknown key(s) {unknown}; allowed: {allowed}"))


def _check_unique(chapters: list[Chapter], locate: _Locator) -> None:
    seen_files: dict[str, int] = {}
    seen_numbers: dict[int, str] = {}
    seen_exercises: dict[str, str] = {}
    for i, chapter in enumerate(chapters):
        line = locate.chapter_line(i)
        label = f"[[chapter]] #{i + 1} ({chapter.file})"
        if chapter.file in seen_files:
            message = f"{label}: file is listed twice (also in [[chapter]] #{seen_files[chapter.file] + 1})"
            raise ManifestError(locate.key_error(line, "file", message))
        if chapter.number in seen_numbers:
            message = f"{label}: chapter number {chapter.number:02d} is taken by {seen_numbers[chapter.number]}"
            raise ManifestError(locate.key_error(line, "file", message))
        for name in chapter.exercises:
            if name in seen_exercises:
                message = (
                    f"{label}: exercise {name!r} is already listed by {seen_exercises[name]}; names must be unique"
                )
                raise ManifestError(locate.key_error(line, "exercises", message))
            seen_exercises[name] = chapter.file
        seen_files[chapter.file] = i
        seen_numbers[chapter.number] = chapter.file


def _check_prerequisites(chapters: list[Chapter], locate: _Locator) -> None:
    """Every prerequisite names a chapter that the manifest lists."""
    numbers = {chapter.number for chapter in chapters}
    for i, chapter in enumerate(chapters):
        missing = [n for n in chapter.prerequisites if n not in numbers]
        if missing:
            message = (
                f"[[chapter]] #{i + 1} ({chapter.file}): prerequisites name chapter(s) {missing} that book.toml"
                f" does not list; listed: {sorted(numbers)}"
            )
            raise ManifestError(locate.key_error(locate.chapter_line(i), "prerequisites", message))


class _Locator:
    """Line numbers for messages: tomllib reports them for syntax errors only, so find headers and keys ourselves."""

    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.path = path

    def table_line(self, header: str) -> int | None:
        return next((i + 1 for i, line in enumerate(self.lines) if line.strip().startswith(header)), None)

    def chapter_line(self, index: int) -> int | None:
        headers = [i + 1 for i, line in enumerate(self.lines) if line.strip().startswith("[[chapter]]")]
        return headers[index] if index < len(headers) else None

    def key_line(self, table_line: int | None, key: str) -> int | None:
        """The line of ``key = ...`` inside the table that starts at ``table_line``."""
        if table_line is None:
            return None
        for i in range(table_line, len(self.lines)):
            stripped = self.lines[i].strip()
            if stripped.startswith("["):
                break
            if re.match(rf"^{re.escape(key)}\s*=", stripped):
                return i + 1
        return table_line

    def table_error(self, line: int | None, message: str) -> str:
        where = f"{self.path}, line {line}" if line else str(self.path)
        return f"{where}: {message}"

    def key_error(self, table_line: int | None, key: str, message: str) -> str:
        return self.table_error(self.key_line(table_line, key), message)
