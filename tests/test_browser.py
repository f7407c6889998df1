"""The course in a real browser: JupyterLab + Chromium run chapter 5 and its widgets react to a slider.

Starts JupyterLab on a free localhost port (token auth) in a copy of the book under ``tmp_path`` (so nothing
in the checkout is written, and jupytext's pairing with the chapter's .py never applies), drives Debian's
Chromium through Playwright (``executable_path=/usr/bin/chromium``; Playwright never downloads a browser),
runs every cell of chapter 5, moves the ``k`` slider of ``explore_complexity()`` with the keyboard and checks
that the widget's output (its summary line and its picture) changed as it must. Saves a screenshot under
``tmp_path`` and prints its path.

Marked ``browser``. Without /usr/bin/chromium (or playwright) it skips with the reason, except under
``CI=true``, where it fails: CI (``.ci/run``) installs Chromium with apt. Every process it starts (the
server and, through it, the kernel; the browser) is ended in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bralib.book.notebooks import build_notebook

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHAPTER = "05_routing_cost"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}: .ci/run installs chromium with apt and [dev] installs playwright")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _book_copy(root: Path) -> Path:
    """book.toml, chapter sources, exercises and chapter 5's notebook under ``root`` (no jupytext.toml)."""
    book = root / "book"
    (book / "chapters").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "book.toml", book / "book.toml")
    for source in (REPO_ROOT / "chapters").glob("*.py"):
        shutil.copy(source, book / "chapters" / source.name)
    shutil.copytree(REPO_ROOT / "exercises", book / "exercises", ignore=shutil.ignore_patterns("__pycache__"))
    build_notebook(REPO_ROOT / "chapters" / f"{CHAPTER}.py", book / "chapters" / f"{CHAPTER}.ipynb")
    return book


def _api(base: str, path: str, token: str, method: str = "GET") -> object:
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


def _start_lab(book: Path, runtime: Path, port: int, token: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "JUPYTER_RUNTIME_DIR": str(runtime / "runtime"),
        "JUPYTER_CONFIG_DIR": str(runtime / "config"),  # no user config, no jupytext pairing from ~/.jupyter
        "JUPYTERLAB_SETTINGS_DIR": str(runtime / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(runtime / "workspaces"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    news = runtime / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast over the page
    # Render every cell: with JupyterLab's default windowed notebook, a widget's image updated in place could
    # stay half painted in the screenshot.
    tracker = runtime / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={book}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
        "jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root in a container
    with open(runtime / "jupyter.log", "w") as log:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(
            command, cwd=book, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(process: subprocess.Popen, base: str, token: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            _api(base, "/api/status", token)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)
    raise AssertionError(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop_lab(process: subprocess.Popen, base: str, token: str) -> None:
    """Shut the kernels down through the API, then the server; its process group last, if anything is left."""
    try:
        for kernel in _api(base, "/api/kernels", token):  # type: ignore[union-attr]
            _api(base, f"/api/kernels/{kernel['id']}", token, method="DELETE")
    except Exception:  # noqa: BLE001 - the server may be down already; the signals below still run
        pass
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    try:  # the server started the kernels in its own session: end whatever of that group is still running
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


NOTEBOOK_ERRORS_JS = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const errors = [];
    for (const cell of panel.content.model.cells) {
        if (cell.type !== 'code') continue;
        for (let i = 0; i < cell.outputs.length; i++) {
            const output = cell.outputs.get(i).toJSON();
            if (output.output_type === 'error') errors.push(output.ename + ': ' + output.evalue);
        }
    }
    return errors;
}"""

COUNT_UNEXECUTED_JS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    let missing = 0;
    for (const cell of cells) { if (cell.type === 'code' && !cell.executionCount) missing++; }
    return missing;
}"""


FRAMES_JS = """(count) => new Promise(done => {
    const step = (left) => left === 0 ? done() : requestAnimationFrame(() => step(left - 1));
    step(count);
})"""


# A cell on the kernel's main thread that keeps drawing log-scale figures (mathtext tick labels) for a few seconds.
BUSY_MAIN_THREAD = """
import time
import matplotlib.pyplot as plt
end = time.monotonic() + 6
while time.monotonic() < end:
    fig, ax = plt.subplots()
    ax.loglog([1, 10, 100], [1e2, 1e4, 1e6])
    fig.tight_layout()
    fig.canvas.draw()
    plt.close(fig)
"""


def test_chapter_5_runs_in_jupyterlab_and_its_widget_reacts(tmp_path):
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed (it is in the [dev] extra: pip install -e '.[dev]')")

    book = _book_copy(tmp_path)
    runtime = tmp_path / "jupyter"
    runtime.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    screenshot = tmp_path / "chapter05_widget.png"
    server = _start_lab(book, runtime, port, token)
    try:
        _wait_ready(server, base, token, runtime / "jupyter.log")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/chapters/{CHAPTER}.ipynb?token={token}")
                page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                       " && window.jupyterapp.shell.currentWidget.sessionContext")  # fmt: skip
                page.wait_for_function("""() => {
                    const ctx = window.jupyterapp.shell.currentWidget.sessionContext;
                    return ctx.session && ctx.session.kernel && ctx.session.kernel.status === 'idle';
                }""")  # fmt: skip
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                page.wait_for_function(f"() => ({COUNT_UNEXECUTED_JS})() === 0"
                                       " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                       ".status === 'idle'", timeout=120_000)  # fmt: skip
                assert page.evaluate(NOTEBOOK_ERRORS_JS) == []

                widget = page.locator(".widget-interact").first  # explore_complexity(): the first interactive
                widget.scroll_into_view_if_needed()
                picture = widget.locator(".widget-output img").first
                expect(picture).to_be_visible()
                before = picture.get_attribute("src")
                k_slider = widget.locator(
                    ".widget-slider", has=page.locator(".widget-label", has_text=re.compile("^k$"))
                )
                readout = k_slider.locator(".widget-readout")
                expect(readout).to_have_text("4")
                summary = widget.locator(".widget-output .jp-RenderedText").first
                expect(summary).to_contain_text("S=7, k=4: 159.9 MMACs")
                handle = k_slider.locator(".noUi-handle")
                handle.focus()
                handle.press("ArrowRight")  # k: 4 -> 5, one change, one update
                expect(readout).to_have_text("5")
                # k = 5 routes one more region: token attention grows by a quarter (see complexity_breakdown)
                expect(summary).to_contain_text("S=7, k=5: 185.6 MMACs")
                page.wait_for_function(
                    "([node, old]) => { const img = node.querySelector('.widget-output img');"
                    " return img !== null && img.getAttribute('src') !== old && img.complete"
                    " && img.naturalWidth > 0; }",
                    arg=[widget.element_handle(), before],
                )
                after = widget.locator(".widget-output img").first.get_attribute("src")
                assert after and after != before

                # JupyterLab serves widget messages on a kernel subshell (a second thread): move the slider while the
                # main thread draws log-scale figures, as a later cell would. Both must finish without an error.
                page.evaluate(
                    "(code) => { const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
                    " window.__mainThread = kernel.requestExecute({code}).done"
                    ".then(reply => reply.content.status === 'ok' ? 'ok'"
                    " : reply.content.ename + ': ' + reply.content.evalue); }",
                    BUSY_MAIN_THREAD,
                )
                for k in (6, 7, 8):
                    handle.press("ArrowRight")
                    expect(readout).to_have_text(str(k))
                    expect(summary).to_contain_text(f"S=7, k={k}:")
                assert page.evaluate("() => window.__mainThread") == "ok"
                output_text = widget.locator(".widget-output").inner_text()
                assert "Error" not in output_text and "Traceback" not in output_text, output_text
                handle.press("ArrowLeft")
                handle.press("ArrowLeft")
                handle.press("ArrowLeft")
                expect(summary).to_contain_text("S=7, k=5: 185.6 MMACs")
                expect(widget.locator(".widget-output img")).to_have_count(1)
                page.wait_for_function(  # the update is over: the kernel is idle again
                    "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
                )
                # The PNG is decoded (and painted) asynchronously: wait for it before the screenshot.
                # The PNG is decoded and painted asynchronously: bring it into view, wait for the decode and a few
                # painted frames before the screenshot.
                picture = widget.locator(".widget-output img").first
                picture.scroll_into_view_if_needed()
                picture.evaluate("img => img.decode()")
                # Headless software raster can leave an image replaced in place half painted: repaint it whole.
                picture.evaluate("img => { img.style.visibility = 'hidden'; void img.offsetHeight;"
                                 " img.style.visibility = ''; }")  # fmt: skip
                page.evaluate(FRAMES_JS, 10)
                widget.screenshot(path=str(screenshot))
                page.screenshot(path=str(tmp_path / "chapter05_page.png"))
            finally:
                browser.close()
    finally:
        _stop_lab(server, base, token)
    assert server.poll() is not None
    assert screenshot.stat().st_size > 0
    print(f"screenshot: {screenshot}")


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_browser_skips_but_fails_under_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no-chromium is missing"):
        test_chapter_5_runs_in_jupyterlab_and_its_widget_reacts(tmp_path)
