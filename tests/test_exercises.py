"""Exercises: every check passes its solution and fails its stub; verdicts are readable; the registry is complete.

The parametrised tests run over every exercise named in book.toml, so a new chapter's exercises are tested here
as soon as they are listed there, with no edit to this file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import bralib.exercises as ex
from bralib.book import load_book
from bralib.cli import main
from bralib.exercises import Case, ExerciseFailed, check, compare, load_function, run_cases

REPO_ROOT = Path(__file__).resolve().parent.parent

BOOK = load_book(REPO_ROOT / "book.toml")
EXERCISES = BOOK.exercise_names


@pytest.mark.parametrize("name", EXERCISES)
def test_the_solution_passes_its_check(name):
    verdict = check(name, load_function(name, solution=True, manifest=BOOK.root), verbose=False)
    assert verdict.passed, f"the solution in {BOOK.chapter_for_exercise(name).solution_file} fails:\n{verdict}"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_stub_fails_its_check(name):
    stub = load_function(name, manifest=BOOK.root)
    verdict = check(name, stub, verbose=False)
    where = BOOK.chapter_for_exercise(name).exercise_file
    assert not verdict.passed, (
        f"the stub {name} in {where} passes its check: was it solved in place? Stubs stay unsolved."
    )
    assert verdict.status == "not implemented", f"stubs must raise NotImplementedError, {name} gives:\n{verdict}"
    assert "NOT DONE YET" in str(verdict) and "then run the check again" in str(verdict)


def test_every_listed_exercise_has_a_check_and_every_check_is_listed():
    registered = set(ex.names())
    assert set(EXERCISES) <= registered, (
        f"no check registered (bralib/exercises/chNN.py) for {set(EXERCISES) - registered}"
    )
    assert registered <= set(EXERCISES), f"checks for exercises book.toml does not list: {registered - set(EXERCISES)}"


def test_every_check_has_cases_with_descriptions():
    for name in EXERCISES:
        case_list = ex.cases(name)
        assert case_list, f"exercise {name} has no cases"
        assert all(c.description for c in case_list)


# ---------------------------------------------------------------- verdicts a learner reads


def _tokens(height, width, n_win, topk):
    return topk * (height // n_win) * (width // n_win)


CASES = [
    Case("a 56x56 map, S=7, k=1", args=(56, 56), kwargs={"n_win": 7, "topk": 1}, expected=64, hint="count per region"),
    Case("a 28x28 map, S=7, k=4", args=(28, 28), kwargs={"n_win": 7, "topk": 4}, expected=64),
]


def test_a_right_answer_passes():
    verdict = run_cases("tokens", _tokens, CASES)
    assert verdict.passed and bool(verdict) and str(verdict) == "tokens: PASSED (2 of 2 cases)"
    assert verdict.raise_if_failed() is verdict


def test_a_wrong_answer_says_what_was_tried_expected_and_got():
    verdict = run_cases("tokens", lambda height, width, n_win, topk: topk * height // n_win, CASES)
    text = str(verdict)
    assert not verdict.passed and verdict.status == "wrong answer" and verdict.cases_passed == 0
    assert text.splitlines()[0] == "tokens: FAILED (wrong answer on case 1 of 2)"
    for expected_line in [
        "tried:    a 56x56 map, S=7, k=1",
        "called:   <lambda>(56, 56, n_win=7, topk=1)",
        "expected: int 64",
        "got:      int 8",
        "problem:  expected 64, got 8",
        "hint:     count per region",
    ]:
        assert expected_line in text, text
    with pytest.raises(ExerciseFailed, match="expected 64, got 8"):
        verdict.raise_if_failed()


def test_a_later_case_failing_is_counted():
    verdict = run_cases(
        "tokens",
        lambda height, width, n_win, topk: 64,
        CASES + [Case("k=2", args=(56, 56), kwargs={"n_win": 7, "topk": 2}, expected=128)],
    )
    assert verdict.status == "wrong answer" and verdict.cases_passed == 2
    assert "on case 3 of 3" in str(verdict)


def test_an_error_is_reported_with_its_line_not_a_traceback():
    def broken(height, width, n_win, topk):
        return topk * (height // (n_win - 7))  # divides by zero for n_win=7

    verdict = run_cases("tokens", broken, CASES)
    text = str(verdict)
    assert verdict.status == "raised"
    assert "raised:   ZeroDivisionError: integer division or modulo by zero" in text
    assert f"test_exercises.py, line {broken.__code__.co_firstlineno + 1}, in broken" in text
    assert "Traceback" not in text


def test_a_stub_is_reported_as_not_done_with_where_to_edit():
    def stub(height, width, n_win, topk):
        raise NotImplementedError

    verdict = run_cases("tokens", stub, CASES)
    assert verdict.status == "not implemented"
    assert f"fill in stub in tests/test_exercises.py, line {stub.__code__.co_firstlineno}" in str(verdict)


def test_the_learner_cannot_spoil_a_case_by_mutating_its_arguments():
    data = [3, 1, 2]
    case = Case("sort a list", args=(data,), expected=[1, 2, 3])
    assert run_cases("sort", lambda xs: (xs.sort(), xs)[1], [case, case]).passed
    assert data == [3, 1, 2]


def test_verify_reports_a_custom_problem_and_survives_a_wrong_type():
    case = Case(
        "rows sum to one",
        args=(torch.ones(2, 3),),
        verify=lambda y: None if torch.allclose(y.sum(-1), torch.ones(2)) else "rows do not sum to one",
    )
    assert run_cases("softmax", lambda x: torch.softmax(x, -1), [case]).passed
    assert "problem:  rows do not sum to one" in str(run_cases("softmax", lambda x: x, [case]))
    broken = str(run_cases("softmax", lambda x: "oops", [case]))
    assert "the result could not be checked (AttributeError" in broken


@pytest.mark.parametrize(
    ("got", "expected", "problem"),
    [
        (torch.ones(2, 3), torch.ones(2, 3), None),
        (torch.ones(2, 3) + 1e-7, torch.ones(2, 3), None),
        (torch.ones(3, 2), torch.ones(2, 3), "expected shape (2, 3), got shape (3, 2)"),
        ([[1.0]], torch.ones(1, 1), "expected a torch.Tensor, got list"),
        (
            torch.tensor([1.0, 2.5, 3.0]),
            torch.tensor([1.0, 2.0, 3.0]),
            "1 of 3 values differ; first at index (1,): expected 2.0, got 2.5 (largest difference 0.5)",
        ),
        (64.0, 64, "expected the int 64, got float 64.0 (// divides whole numbers and keeps an int)"),
        (0.30000000000000004, 0.3, None),
        ((1, 2.0), (1, 2.5), "expected 2.5 at [1], got 2.0"),
        ({"a": 1}, {"a": 1, "b": 2}, "expected a dict with keys ['a', 'b']"),
        ("abc", "abd", "expected 'abd', got 'abc'"),
        (torch.tensor([True, False]), torch.tensor([True, True]), "1 of 2 values differ; first at index (1,)"),
    ],
)
def test_compare_explains_the_difference(got, expected, problem):
    result = compare(got, expected)
    if problem is None:
        assert result is None
    else:
        assert result is not None and result.startswith(problem), result


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="no exercise check named 'nope'; known: .*tokens_to_attend"):
        check("nope", lambda: None)


def test_registering_one_name_twice_from_two_modules_is_an_error():
    def first():
        return []

    first.__module__ = "bralib.exercises.ch98"
    second = lambda: []  # noqa: E731
    second.__module__ = "bralib.exercises.ch99"
    try:
        ex.exercise("twice_for_test")(first)
        with pytest.raises(ValueError, match="registered twice: in bralib.exercises.ch98 and bralib.exercises.ch99"):
            ex.exercise("twice_for_test")(second)
    finally:
        ex._REGISTRY.pop("twice_for_test", None)


def test_load_function_names_a_missing_function(tmp_path):
    (tmp_path / "book.toml").write_text((REPO_ROOT / "book.toml").read_text())
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "00_how_to_use.py").write_text("def something_else():\n    pass\n")
    with pytest.raises(AttributeError, match="defines no function named 'tokens_to_attend'"):
        load_function("tokens_to_attend", manifest=tmp_path)
    with pytest.raises(FileNotFoundError, match="must live in .*solutions/00_how_to_use.py, which is missing"):
        load_function("tokens_to_attend", solution=True, manifest=tmp_path)


# ---------------------------------------------------------------- the command line


def test_exercise_check_command(capsys):
    assert main(["exercise", "--manifest", str(REPO_ROOT), "check", "--solutions"]) == 0
    out = capsys.readouterr().out
    assert "tokens_to_attend: PASSED" in out and f"{len(EXERCISES)} passed, 0 failed" in out
    assert main(["exercise", "--manifest", str(REPO_ROOT), "check", "--chapter", "0"]) == 1
    assert "tokens_to_attend: NOT DONE YET" in capsys.readouterr().out
    assert main(["exercise", "--manifest", str(REPO_ROOT), "check", "nope"]) == 2
    assert "unknown exercise(s) ['nope']" in capsys.readouterr().err


def test_exercise_list_command(capsys):
    assert main(["exercise", "--manifest", str(REPO_ROOT), "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tokens_to_attend +00_how_to_use +exercises/00_how_to_use.py$", out, re.MULTILINE), out
