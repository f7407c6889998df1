"""A learner's code cannot end or hang an exercise check: it runs in a child process with a time limit, and an exit,
a crash or an endless loop is a FAILED verdict that says what happened (and a non-zero exit code on the command line).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from bralib.cli import main
from bralib.exercises import check, load_function

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLUTION = "def tokens_to_attend(height, width, n_win, topk):\n    return topk * (height // n_win) * (width // n_win)\n"


def book_with(tmp_path: Path, source: str) -> Path:
    """A copy of the book whose exercises/00_how_to_use.py is ``source``."""
    (tmp_path / "book.toml").write_text((REPO_ROOT / "book.toml").read_text())
    (tmp_path / "exercises").mkdir(exist_ok=True)
    (tmp_path / "exercises" / "00_how_to_use.py").write_text(source)
    return tmp_path


def learner(body: str, header: str = "") -> str:
    return f"import os, signal, sys, threading\n{header}\ndef tokens_to_attend(height, width, n_win, topk):\n{body}\n"


@pytest.mark.parametrize(
    "source,status,message",
    [
        (learner("    sys.exit(0)"), "exited", r"called sys.exit\(0\) \(at exercises/00_how_to_use.py, line 4"),
        (learner("    sys.exit(3)"), "exited", r"your code called sys.exit\(3\)"),
        (learner("    exit()"), "exited", r"your code called sys.exit\(None\)"),
        (learner("    os._exit(0)"), "exited", r"ended the process running it \(exit code 0, e\.g\. os\._exit\(0\)\)"),
        (learner("    os._exit(7)"), "exited", r"\(exit code 7, e\.g\. os\._exit\(7\)\)"),
        (learner("    raise KeyboardInterrupt"), "exited", r"ended the process running it \(exit code 1"),
        (learner("    os.kill(os.getpid(), signal.SIGKILL)"), "exited", r"killed by SIGKILL \(out of memory\?\)"),
        (learner("    while True:\n        pass"), "timed out", r"timed out after 1 s: your code was still running"),
        (learner("    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        pass"), "timed out",
         r"timed out after 1 s"),
        ("import sys\nsys.exit(0)\n", "cannot load", r"your file called sys.exit\(0\) while it was being imported"),
        ("import os\nos._exit(0)\n", "exited", r"exit code 0"),
        ("while True:\n    pass\n", "timed out", r"before the first case: starting, and loading your file"),
        ("def tokens_to_attend(:\n", "cannot load", r"SyntaxError"),
        ("import no_such_module_here\n", "cannot load", r"ModuleNotFoundError: No module named 'no_such_module_here'"),
        (learner("    threading.Thread(target=lambda: time.sleep(3600)).start()\n    return 0", "import time"),
         "wrong answer", r"expected 64, got 0"),
    ],
    ids=["sys.exit-0", "sys.exit-3", "exit", "os._exit-0", "os._exit-7", "keyboard-interrupt", "sigkill", "loop",
         "loop-ignoring-sigterm", "exit-on-import", "os._exit-on-import", "loop-on-import", "syntax-error",
         "missing-import", "thread-left-running"],
)  # fmt: skip
def test_the_learners_code_cannot_end_or_hang_the_check(tmp_path, source, status, message):
    book = book_with(tmp_path, source)
    start = time.monotonic()
    verdict = check("tokens_to_attend", manifest=book, timeout=1, verbose=False)
    assert time.monotonic() - start < 30, "the check must come back soon after its time limit"
    assert verdict.status == status and not verdict.passed, str(verdict)
    assert str(verdict).startswith("tokens_to_attend: FAILED (")
    assert any(re.search(message, text) for _, text in verdict.details), str(verdict)


def test_a_right_answer_still_passes_in_the_child(tmp_path):
    verdict = check("tokens_to_attend", manifest=book_with(tmp_path, SOLUTION), verbose=False)
    assert verdict.passed and str(verdict) == "tokens_to_attend: PASSED (9 of 9 cases)"


def test_the_case_that_hung_is_named(tmp_path):
    source = learner(
        "    if topk == 4:\n        while True:\n            pass\n    return topk * (height // n_win) ** 2"
    )
    verdict = check("tokens_to_attend", manifest=book_with(tmp_path, source), timeout=1, verbose=False)
    assert verdict.status == "timed out" and verdict.cases_passed == 1, str(verdict)
    assert "FAILED (timed out on case 2 of 9)" in str(verdict) and "k=4" in verdict.details[0][1]


def _exits(height, width, n_win, topk):
    sys.exit(0)


def _os_exits(height, width, n_win, topk):
    os._exit(0)


def _loops(height, width, n_win, topk):
    while True:
        pass


@pytest.mark.parametrize(
    "fn,status",
    [(_exits, "exited"), (_os_exits, "exited"), (_loops, "timed out"), (lambda *args, **kwargs: os._exit(5), "exited")],
    ids=["sys.exit", "os._exit", "loop", "lambda-os._exit"],
)
def test_a_function_passed_in_is_isolated_too(fn, status):
    """Functions defined in a notebook reach the child by fork (they cannot be loaded from a file)."""
    verdict = check("tokens_to_attend", fn, timeout=1, verbose=False)
    assert verdict.status == status, str(verdict)


def test_a_loaded_solution_is_checked_from_its_file():
    solution = load_function("tokens_to_attend", solution=True, manifest=REPO_ROOT)
    assert solution.__bralib_exercise__ == ("tokens_to_attend", True, str(REPO_ROOT.resolve()))
    assert check("tokens_to_attend", solution, verbose=False).passed


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True, "10"])
def test_a_bad_timeout_is_refused(timeout):
    with pytest.raises(ValueError, match=r"timeout must be a positive number of seconds, got"):
        check("tokens_to_attend", lambda *args: 0, timeout=timeout)


def test_the_command_fails_with_the_verdict_and_exit_code_1(tmp_path, capsys):
    book = book_with(tmp_path, learner("    sys.exit(0)"))
    assert main(["exercise", "--manifest", str(book), "check", "tokens_to_attend"]) == 1
    out = capsys.readouterr().out
    assert "tokens_to_attend: FAILED (exited on case 1 of 9)" in out and "0 passed, 1 failed" in out
    book_with(tmp_path, "while True:\n    pass\n")
    assert main(["exercise", "--manifest", str(book), "check", "--timeout", "1.5", "tokens_to_attend"]) == 1
    assert "timed out after 1.5 s" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-2", "abc", "inf", "nan"])
def test_the_command_refuses_a_bad_timeout(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["exercise", "--manifest", str(REPO_ROOT), "check", "--timeout", value, "tokens_to_attend"])
    assert exit_info.value.code == 2
    assert f"--timeout: must be a positive number of seconds, got '{value}'" in capsys.readouterr().err
