"""The book's website in a real browser: figures load with their captions, math is typeset, nothing leaves the machine.

Builds the site as ``bralib book html`` does (into ``build/site``, shared with tests/test_site.py: the second build
reuses the first one's executed chapters), serves ``build/site/html`` on a free 127.0.0.1 port with Python's
http.server in a thread, and opens chapter pages and the notation page in Debian's Chromium through Playwright
(``executable_path=/usr/bin/chromium``; Playwright never downloads a browser). Every request the pages make is
recorded; one to any host but the local server is aborted and fails the test. Saves a screenshot of chapter 3
under ``tmp_path``, and also to the path in ``$BRALIB_SITE_SCREENSHOT`` when that is set (the README's picture,
``docs/site_chapter03.png``, is made so).

Marked ``browser`` (and ``slow``: the site build executes every chapter unless build/site holds them). Without
/usr/bin/chromium or playwright it skips with the reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bralib.book.site import DEFAULT_BUILD, build_site, missing_packages

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
# Pages to open, and whether each must show at least one numbered figure.
PAGES = {
    "chapters/03_regions_routing.html": True,
    "chapters/05_routing_cost.html": True,
    "chapters/01_attention.html": True,
    "notation.html": False,
}

# Math on the page: every element Sphinx/MyST marked as math holds MathJax's output, and no TeX delimiter is left in
# the prose (code blocks may hold dollars of their own).
MATH_STATE_JS = """() => {
    const article = document.querySelector('article') || document.body;
    const maths = [...article.querySelectorAll('.math')];
    const typeset = maths.filter(m => m.querySelector('mjx-container') !== null).length;
    const clone = article.cloneNode(true);
    clone.querySelectorAll('pre, code, .highlight, script, style, mjx-container').forEach(n => n.remove());
    const raw = (clone.textContent.match(/\\$[^$\\s][^$]*\\$|\\\\\\(|\\\\\\[/g) || []).slice(0, 5);
    return {maths: maths.length, typeset: typeset, containers: article.querySelectorAll('mjx-container').length,
            raw: raw};
}"""

FIGURES_JS = """() => [...document.querySelectorAll('article figure')].map(f => {
    const img = f.querySelector('img');
    const number = f.querySelector('figcaption .caption-number');
    return {loaded: img !== null && img.complete && img.naturalWidth > 0,
            number: number ? number.textContent.trim() : '',
            caption: (f.querySelector('figcaption') || {textContent: ''}).textContent.trim()};
})"""


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}: .ci/run installs chromium with apt and [dev] installs playwright")
    pytest.skip(reason)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture
def served_site():
    """The built site on http://127.0.0.1:PORT, served from a thread; yields the base URL."""
    if missing_packages():
        _missing(f"the website's packages are missing ({', '.join(missing_packages())}): pip install -e '.[site]'")
    from bralib.book import load_book

    index = build_site(load_book(REPO_ROOT / "book.toml"), REPO_ROOT / DEFAULT_BUILD)
    handler = functools.partial(_QuietHandler, directory=str(index.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_site_pages_show_figures_and_math_and_fetch_nothing_from_outside(served_site, tmp_path):
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (it is in the [dev] extra: pip install -e '.[dev]')")

    base = served_site
    outside: list[str] = []
    local: list[str] = []
    failed: list[str] = []
    screenshot = tmp_path / "site_chapter03.png"

    def route(route) -> None:
        url = route.request.url
        if url.startswith(f"{base}/") or url.startswith("data:") or url.startswith("blob:"):
            local.append(url)
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.route("**/*", route)
            page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
            page.on("response", lambda r: failed.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None)
            for path, has_figures in PAGES.items():
                page.goto(f"{base}/{path}", wait_until="load")
                page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
                page.evaluate("() => MathJax.startup.promise")  # typesetting is done when this resolves
                math = page.evaluate(MATH_STATE_JS)
                assert math["maths"] > 0 and math["typeset"] == math["maths"], f"{path}: math not typeset: {math}"
                assert math["raw"] == [], f"{path}: raw TeX left in the text: {math['raw']}"
                figures = page.evaluate(FIGURES_JS)
                if has_figures:
                    assert figures, f"{path}: no figure"
                    # Numbered by chapter, in order: Figure 3.1, 3.2, ... on chapter 3's page.
                    chapter = int(path.split("/")[1][:2])
                    numbers = [f["number"] for f in figures]
                    assert numbers == [f"Figure {chapter}.{i}" for i in range(1, len(figures) + 1)], (path, numbers)
                assert all(f["loaded"] for f in figures), f"{path}: an image did not load: {figures}"
                assert all(len(f["caption"]) > len(f["number"]) + 10 for f in figures), (path, figures)
                if path.startswith("chapters/03"):  # the README's picture: the chapter's first figure, in context
                    page.locator("article figure").first.evaluate("f => f.scrollIntoView({block: 'center'})")
                    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
                    page.screenshot(path=str(screenshot))
            # The search page runs the site's own index (searchindex.js), offline like the rest.
            page.goto(f"{base}/search.html?q=routing", wait_until="load")
            page.wait_for_selector("#search-results li a", timeout=60_000)
            hits = page.locator("#search-results li a").all_inner_texts()
            assert any("Regions and the routing graph" in hit for hit in hits), hits
        finally:
            browser.close()

    assert outside == [], f"the pages asked for something off this machine: {sorted(set(outside))[:10]}"
    assert failed == [], f"requests that failed: {failed[:10]}"
    assert any("mathjax" in url for url in local), "MathJax was not loaded from the site itself"
    assert screenshot.stat().st_size > 10_000
    copy_to = os.environ.get("BRALIB_SITE_SCREENSHOT")
    if copy_to:
        shutil.copy(screenshot, copy_to)
    print(f"screenshot: {screenshot}", file=sys.stderr)


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_browser_skips_but_fails_under_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no-chromium is missing"):
        test_site_pages_show_figures_and_math_and_fetch_nothing_from_outside("http://127.0.0.1:9", tmp_path)
