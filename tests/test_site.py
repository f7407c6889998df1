"""The book's website (`bralib book html`): generated pages, solutions, and one end-to-end build checked link by link.

The end-to-end test builds into ``build/site`` beside book.toml, as the command does, so that a second build (by
tests/test_site_browser.py, or by you) reuses the executed chapters of the execution cache; a fresh clone executes
every chapter once (slow-marked: about 2.5 minutes on an idle 2-core machine, 11 chapters; a rebuild with nothing
changed takes under 10 s). Then every HTML file is parsed and every relative ``href``/``src`` must point to
a file that exists (and to an ``id`` in it, for a ``#fragment``), while no script, stylesheet, image or font may
come from another host.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bralib.book import load_book
from bralib.book import site as site_module
from bralib.book.manifest import parse_book
from bralib.book.site import (
    DEFAULT_BUILD,
    SiteError,
    Symbol,
    build_site,
    chapter_notebook,
    load_notation,
    map_page,
    notation_page,
    reading_paths,
    solution_blocks,
    solutions_markdown,
    warnings,
)
from bralib.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent

THREE_CHAPTERS = """\
[book]
title = "T"
authors = ["A"]
version = "0.1.0"
description = "D"
repository = "R"

[check]
budget_seconds = 120

[[chapter]]
file = "chapters/00_intro.py"
title = "Intro"
builds = []
exercises = []
minutes = 5

[[chapter]]
file = "chapters/01_middle.py"
title = "Middle"
builds = ["bralib.ops"]
exercises = ["first"]
prerequisites = [0]
minutes = 20

[[chapter]]
file = "chapters/02_end.py"
title = "End"
builds = []
exercises = []
prerequisites = [1]
"""


@pytest.fixture
def small_book(tmp_path):
    return parse_book(THREE_CHAPTERS, tmp_path / "book.toml")


# ---------------------------------------------------------------- generated pages


def test_chapter_map_lists_prerequisites_minutes_and_reading_paths(small_book):
    page = map_page(small_book)
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert rows[0] == "| 0 | [0. Intro](chapters/00_intro.ipynb) | - | 5 | - |"
    assert rows[1] == "| 1 | [1. Middle](chapters/01_middle.ipynb) | [0](chapters/00_intro.ipynb) | 20 | `bralib.ops` |"
    assert rows[2].startswith("| 2 | [2. End](chapters/02_end.ipynb) | [1](chapters/01_middle.ipynb) | - |")
    assert "about 25 minutes in all" in page
    # Chapter 2 needs 1, which needs 0: the whole chain, with the time of those that state one.
    assert reading_paths(small_book) == [
        "To read chapter 1, Middle: 0 → 1 (about 25 minutes)",
        "To read chapter 2, End: 0 → 1 → 2 (about 25 minutes)",
    ]


def test_chapter_map_picture_has_a_box_per_chapter_and_needs_no_font(small_book, tmp_path):
    assert site_module.chapter_layers(small_book) == {0: 0, 1: 1, 2: 2}
    svg = site_module.draw_chapter_map(small_book, tmp_path / "map.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    assert "<text" not in svg and "@font-face" not in svg  # labels drawn as outlines: no font needed
    assert not re.search(r"href=\"(?!#)|url\((?!#)", svg)  # refers to nothing outside itself
    assert svg.count('<g id="text_') == 3  # one label per chapter
    assert svg == site_module.draw_chapter_map(small_book, tmp_path / "again.svg").read_text()  # no date stamp


def test_the_repositorys_map_covers_every_chapter(book):
    page = map_page(book)
    for chapter in book.chapters:
        assert f"[{chapter.number}. {chapter.title}](chapters/{chapter.stem}.ipynb)" in page


def test_notation_page_links_each_symbol_to_its_chapter(small_book):
    symbols = [Symbol("S", "n_win", "regions per side", 1), Symbol("N = HW", "", "tokens", 0)]
    page = notation_page(symbols, small_book)
    assert "| $S$ | `n_win` | regions per side | [1. Middle](chapters/01_middle.ipynb) |" in page
    assert "| $N = HW$ | - | tokens | [0. Intro](chapters/00_intro.ipynb) |" in page
    with pytest.raises(SiteError, match="names chapter 7, which book.toml does not list"):
        notation_page([Symbol("x", "", "?", 7)], small_book)


def test_the_repositorys_notation_has_the_books_symbols(book):
    symbols = load_notation(REPO_ROOT / "docs" / "site" / "notation.toml")
    by_code = {s.code: s for s in symbols}
    assert by_code["n_win"].math == "S" and by_code["topk"].math == "k" and by_code["qk_dim"].math == "C_{qk}"
    assert any(s.math.startswith("n = HW/S^2") for s in symbols)
    notation_page(symbols, book)  # every symbol names a chapter the book has


def test_notation_file_errors_name_the_row(tmp_path):
    path = tmp_path / "notation.toml"
    path.write_text('[[symbol]]\nmath = "S"\ncode = "n_win"\nmeaning = "m"\n')
    with pytest.raises(SiteError, match=r"\[\[symbol\]\] #1 must have exactly the keys"):
        load_notation(path)
    path.write_text('[[symbol]]\nmath = "S"\ncode = "n_win"\nmeaning = "m"\nchapter = "3"\n')
    with pytest.raises(SiteError, match="chapter must be an int"):
        load_notation(path)


def test_bibliography_has_the_works_the_book_cites():
    bib = (REPO_ROOT / "docs" / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", bib, re.MULTILINE)
    assert len(keys) == len(set(keys)), "a key is defined twice"
    expected = ["zhu2023biformer", "liu2021swin", "dong2022cswin", "xia2022dat", "hassani2023nat", "natten"]
    expected += ["huang2019ccnet", "touvron2021deit", "dao2022flashattention", "dong2024flexattention", "fvcore"]
    assert set(expected) <= set(keys), sorted(set(expected) - set(keys))
    cited = set()
    for source in (REPO_ROOT / "chapters").glob("*.py"):
        for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", source.read_text()):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no chapter cites anything"
    assert cited <= set(keys), f"cited but not in docs/references.bib: {sorted(cited - set(keys))}"


# ---------------------------------------------------------------- solutions


SOLUTIONS = '''\
"""Solutions."""

import torch

SCALE = 2  # a constant the solutions share


# Why twice? Because the check says so.
def first(x):
    """The first one."""
    return x * SCALE


def _helper():
    return 1
'''


def test_solution_blocks_take_each_function_with_its_comment_and_the_shared_rest(tmp_path):
    path = tmp_path / "solutions.py"
    path.write_text(SOLUTIONS)
    blocks = solution_blocks(path, ["first"])
    assert blocks["first"].startswith("# Why twice? Because the check says so.\ndef first(x):")
    assert blocks["first"].endswith("return x * SCALE")
    assert "SCALE = 2" in blocks[""] and "def _helper" in blocks[""] and "import torch" not in blocks[""]
    with pytest.raises(SiteError, match=r"no top-level function\(s\) \['second'\]"):
        solution_blocks(path, ["first", "second"])


def test_solutions_are_folded_dropdowns(small_book):
    chapter = small_book.chapters[1]
    chapter.solution_file.parent.mkdir(parents=True)
    chapter.solution_file.write_text(SOLUTIONS)
    text = solutions_markdown(chapter)
    assert text.startswith("## Solutions\n")
    assert "::::{dropdown} Solution: `first`\n```python\n# Why twice?" in text
    assert "::::{dropdown} Helpers the solutions share" in text
    assert text.count("::::{dropdown}") == 2 and text.count("\n::::") == 4  # each dropdown opened and closed
    assert ":open:" not in text  # closed until clicked


def test_chapter_notebook_runs_in_chapters_and_ends_with_the_solutions(book):
    chapter = book.chapters[3]
    nb = chapter_notebook(chapter)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "code" and first.metadata["tags"] == ["remove-cell"]
    assert f"os.chdir({str(chapter.source.parent)!r})" in first.source
    assert last.cell_type == "markdown" and last.source.startswith("## Solutions")
    for name in chapter.exercises:
        assert f"Solution: `{name}`" in last.source
    # Ids are stable, so the execution cache recognises an unchanged chapter.
    assert [c["id"] for c in nb.cells] == [c["id"] for c in chapter_notebook(chapter).cells]
    # The library's fingerprint sits in the hidden cell: a change to bralib re-executes the chapter.
    assert "abc123" in chapter_notebook(chapter, "abc123").cells[0].source


def test_fingerprint_follows_the_library(tmp_path):
    for folder in site_module.FINGERPRINTED:
        (tmp_path / folder).mkdir()
    (tmp_path / "bralib" / "ops.py").write_text("x = 1\n")
    first = site_module.sources_fingerprint(tmp_path)
    assert site_module.sources_fingerprint(tmp_path) == first
    (tmp_path / "bralib" / "ops.py").write_text("x = 2\n")
    assert site_module.sources_fingerprint(tmp_path) != first
    (tmp_path / "bralib" / "__pycache__").mkdir()
    (tmp_path / "bralib" / "__pycache__" / "ops.cpython-311.pyc").write_bytes(b"compiled")
    second = site_module.sources_fingerprint(tmp_path)
    (tmp_path / "bralib" / "__pycache__" / "ops.cpython-311.pyc").write_bytes(b"recompiled")
    assert site_module.sources_fingerprint(tmp_path) == second  # byte code does not count


def test_figure_metadata_survives_the_round_trip(tmp_path):
    """A code cell's caption (MyST-NB's figure metadata) is kept by jupytext in both directions."""
    import jupytext

    source = textwrap.dedent("""\
        # %% [markdown]
        # See {numref}`fig-x`.

        # %% mystnb={"figure": {"caption": "A caption with $k$.", "name": "fig-x"}}
        x = 1
    """)
    nb = jupytext.reads(source, fmt="py:percent")
    assert nb.cells[1].metadata["mystnb"]["figure"] == {"caption": "A caption with $k$.", "name": "fig-x"}
    assert jupytext.writes(nb, fmt="py:percent").endswith(source.split("\n\n", 1)[1])


def test_chapters_survive_a_save_from_jupyterlab_unchanged(book):
    """Cell metadata (captions) written as jupytext writes it: saving a chapter unchanged keeps its bytes.

    jupytext escapes non-ASCII characters in cell metadata, so a caption must spell 7x7, not 7\u00d77."""
    import jupytext

    for chapter in book.chapters:
        text = chapter.source.read_text(encoding="utf-8")
        again = jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent")
        again = re.sub(r"#       (format_version|jupytext_version):.*\n", "", again)  # jupytext.toml drops these
        assert again == text, f"{chapter.file} changes when saved: check the metadata of its cell headers"


def test_every_figure_cell_of_the_book_has_a_caption(book):
    """A cell that draws (plt.show()) carries MyST-NB figure metadata with a caption and a unique name."""
    import jupytext

    names = set()
    missing = []
    for chapter in book.chapters:
        nb = jupytext.read(chapter.source, fmt="py:percent")
        for cell in nb.cells:
            figure = cell.metadata.get("mystnb", {}).get("figure")
            if figure:
                assert figure.get("caption") and figure.get("name", "").startswith("fig-"), (chapter.file, figure)
                assert figure["name"] not in names, f"figure name {figure['name']} used twice"
                names.add(figure["name"])
            elif cell.cell_type == "code" and re.search(r"plt\.show\(\)|\.show_figure\(|display\(fig", cell.source):
                missing.append(f"{chapter.file}: {cell.source.splitlines()[0][:60]}")
    assert not missing, "figure cells without a caption:\n" + "\n".join(missing)


# ---------------------------------------------------------------- the command line


def test_book_html_reports_missing_packages(monkeypatch, capsys):
    monkeypatch.setattr(site_module, "missing_packages", lambda: ["sphinx"])
    assert main(["book", "html"]) == 1
    err = capsys.readouterr().err
    assert "bralib book: error: the website needs sphinx" in err and "[site]" in err


def test_book_html_prints_the_front_page_or_opens_it(monkeypatch, tmp_path, capsys):
    import webbrowser

    index = tmp_path / "html" / "index.html"
    calls = []
    monkeypatch.setattr(site_module, "build_site", lambda book, out, jobs, progress: calls.append((out, jobs)) or index)
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["book", "html", "--out", str(tmp_path), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(index) and calls == [(tmp_path, 2)] and opened == []
    assert main(["book", "html", "--open"]) == 0
    assert opened == [index.as_uri()] and calls[-1] == (None, 1)


def test_book_html_rejects_zero_jobs(capsys):
    assert main(["book", "html", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


# ---------------------------------------------------------------- the whole site, built


class _Links(HTMLParser):
    """Every href/src of one page (with the tag), and every id/name an anchor can point to."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append((tag, name, value))
            elif name in ("id", "name"):
                self.anchors.add(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def check_site(html_dir: Path) -> list[str]:
    """Problems of a built site: broken relative links or anchors, and resources from other hosts."""
    problems = []
    pages = {path: _parse(path) for path in sorted(html_dir.rglob("*.html"))}
    for page, parsed in pages.items():
        if page.relative_to(html_dir).parts[0] == "_static":
            continue  # the themes' Jinja templates (webpack-macros.html), copied as assets, are no pages
        where = page.relative_to(html_dir)
        for tag, attribute, url in parsed.links:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") or url.startswith("//"):
                if attribute == "src" or tag == "link":
                    problems.append(f"{where}: <{tag} {attribute}> loads from another host: {url}")
                continue
            if parts.scheme:  # mailto:, data:, javascript:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{where}: <{tag} {attribute}={url!r}> points to a missing file")
            elif parts.fragment and target.suffix == ".html":
                anchors = pages[target].anchors if target in pages else _parse(target).anchors
                if unquote(parts.fragment) not in anchors:
                    problems.append(f"{where}: <{tag} {attribute}={url!r}>: no id {parts.fragment!r} there")
    for css in html_dir.rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", css.read_text(encoding="utf-8")):
            problems.append(f"{css.relative_to(html_dir)}: loads from another host: {url}")
    return problems


def test_link_checker_finds_what_is_broken(tmp_path):
    (tmp_path / "a.html").write_text(
        '<a id="top" href="b.html#there">ok</a><a href="b.html#nowhere">bad anchor</a><a href="missing.html">x</a>'
        '<script src="https://cdn.example/x.js"></script><a href="https://example.org">fine</a>'
        '<img src="img/p.png"><link href="//fonts.example/f.css" rel="stylesheet">'
    )
    (tmp_path / "b.html").write_text('<p id="there">b</p><a href="a.html#top">back</a>')
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "p.png").write_bytes(b"png")
    problems = check_site(tmp_path)
    assert len(problems) == 4, problems
    assert any("no id 'nowhere'" in p for p in problems)
    assert any("missing.html" in p for p in problems)
    assert any("cdn.example" in p for p in problems) and any("fonts.example" in p for p in problems)


@pytest.mark.slow
def test_the_whole_site_builds_offline_and_every_link_resolves(book):
    if site_module.missing_packages():
        pytest.skip(f"the [site] extra is not installed ({', '.join(site_module.missing_packages())})")
    out = REPO_ROOT / DEFAULT_BUILD
    start = time.perf_counter()
    index = build_site(book, out)
    print(f"site built in {time.perf_counter() - start:.0f} s: {index}")
    html = index.parent
    assert warnings(out) == [], "Sphinx warned (unresolved citation, reference or figure?):\n" + "\n".join(
        warnings(out)
    )
    assert check_site(html) == []
    for page in ("index.html", "map.html", "notation.html", "bibliography.html", "search.html", "searchindex.js"):
        assert (html / page).is_file(), page
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    bibliography = (html / "bibliography.html").read_text()
    assert "BiFormer: Vision Transformer with Bi-Level Routing Attention" in bibliography
    cited_anywhere = False
    for chapter in book.chapters:
        text = (html / "chapters" / f"{chapter.stem}.html").read_text()
        assert "cell execution failed" not in text.lower() and "Traceback (most recent call last)" not in text
        # No stray object repr (a cell that ends in torch.manual_seed(0) prints "<torch._C.Generator at 0x...>").
        stray_repr = re.search(r"&lt;[\w.]+ (object )?at 0x[0-9a-f]+&gt;", text)
        assert not stray_repr, f"{chapter.stem} prints an object's repr: {stray_repr.group()}"
        if chapter.exercises:
            dropdowns = re.findall(r"<details[^>]*sd-dropdown[^>]*>", text)
            assert len(dropdowns) >= len(chapter.exercises), (chapter.stem, len(dropdowns))
            assert not any(" open" in d for d in dropdowns), f"{chapter.stem}: a solution is unfolded"
        # Every picture a chapter shows sits in a numbered, captioned figure.
        article = text[text.find("<article") : text.find("</article>")]
        figures = re.findall(r"<figure\b.*?</figure>", article, re.DOTALL)
        loose = re.sub(r"<figure\b.*?</figure>", "", article, flags=re.DOTALL)
        assert "<img" not in loose, f"{chapter.stem}: an image outside a captioned figure"
        for figure in figures:
            number = f'class="caption-number">Figure {chapter.number}.'
            assert number in figure, f"{chapter.stem}: a figure not numbered {chapter.number}.N"
        if figures:  # and the text refers to them ({numref}), by number
            assert re.search(r'href="#fig-[^"]+"[^>]*>.*?Figure \d+\.\d+', article, re.DOTALL), chapter.stem
        cited_anywhere |= "bibliography.html#id" in text
    assert cited_anywhere, "no chapter's citation links into the bibliography"
    # The chapters ran in the repository's chapters/ folder and their outputs are cached for the next build.
    assert any((out / "jupyter_cache").rglob("*.ipynb"))
    settings = json.loads((out / "src" / "site_settings.json").read_text())
    assert Path(settings["execution_cache"]) == out / "jupyter_cache"


def test_a_failing_chapter_is_reported_by_its_cell_and_error(tmp_path):
    log = tmp_path / "sphinx-err.log"
    log.write_text(
        "Traceback ...\nnbclient.exceptions.CellExecutionError: An error occurred while executing the following cell:\n"
        "------------------\nassert value == 2\n------------------\nAssertionError: value is not 2\n\n"
        "The above exception was the direct cause of the following exception:\n...\n"
        "myst_nb.core.execute.base.ExecutionError: /b/src/chapters/03_regions_routing.ipynb\n"
    )
    output = f"Extension error!\nThe full traceback has been saved in:\n{log}\n\x1b[31mTo report this error...\x1b[0m"
    report = site_module._failure_report(output)
    assert report.startswith("chapter 03_regions_routing failed: An error occurred while executing the following cell")
    assert "assert value == 2" in report and "AssertionError: value is not 2" in report
    assert "direct cause" not in report
    # Without a saved log: the end of Sphinx's own output, colour codes removed.
    assert site_module._failure_report("line 1\n\x1b[31mWARNING: x\x1b[0m") == "line 1\nWARNING: x"


def test_site_build_of_a_missing_chapter_names_it(tmp_path):
    book = load_book(REPO_ROOT / "book.toml")
    broken = replace(book, chapters=(replace(book.chapters[0], file="chapters/00_nowhere.py"),))
    with pytest.raises(SiteError, match="chapters/00_nowhere.py, which does not exist"):
        site_module.write_sources(broken, tmp_path / "src", tmp_path / "cache")
