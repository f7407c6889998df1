"""The book: its manifest (``book.toml``), notebook generation and execution under nbval.

``load_book()`` finds the nearest ``book.toml`` and returns a :class:`Book` whose chapters come in reading
order. Notebook tooling (jupytext, pytest) is imported only when used, in :mod:`bralib.book.notebooks`.
"""

from bralib.book.manifest import Book, Chapter, ManifestError, find_manifest, load_book

__all__ = ["Book", "Chapter", "ManifestError", "find_manifest", "load_book"]
