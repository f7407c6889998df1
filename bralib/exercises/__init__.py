"""Exercise checks: run a learner's function on a few cases and say, in words, what went right or wrong.

Learners call :func:`check`::

    from bralib.exercises import check
    check("tokens_to_attend")          # the function of that name in exercises/NN_slug.py, read afresh
    check("tokens_to_attend", my_fn)   # or any function you pass

It prints a verdict (what was tried, what was expected, what came back; never a bare traceback for a wrong
answer) and returns it: ``verdict.passed`` tells a test, ``verdict.raise_if_failed()`` raises
:class:`ExerciseFailed` (an ``AssertionError``) with the same text.

Authors add checks in their own file, ``bralib/exercises/chNN.py``, found here by name (``ch`` + digits) the
first time a check is needed, so no other file changes::

    from bralib.exercises import Case, exercise

    @exercise("tokens_to_attend")      # the name listed under `exercises` in book.toml
    def _cases():
        yield Case("a 56x56 map, S=7, k=1", args=(56, 56), kwargs={"n_win": 7, "topk": 1}, expected=64)
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import numbers
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECK_MODULE = re.compile(r"^ch\d+$")  # bralib/exercises/ch00.py, ch01.py, ...

CaseFactory = Callable[[], Iterable["Case"]]
_REGISTRY: dict[str, tuple[CaseFactory, str]] = {}  # name -> (case factory, module that registered it)
_discovered = False


@dataclass
class Case:
    """One call of the learner's function and what it must give back.

    Give ``expected`` (compared with :func:`compare`, within ``atol``/``rtol`` for floats and tensors) or
    ``verify``, a function of the result that returns what is wrong with it, or None when it is right.
    """

    description: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    expected: Any = None
    verify: Callable[[Any], str | None] | None = None
    atol: float = 1e-6
    rtol: float = 1e-5
    hint: str = ""


class ExerciseFailed(AssertionError):
    """Raised by :meth:`Verdict.raise_if_failed`; the message is the readable verdict."""


@dataclass
class Verdict:
    """The outcome of :func:`check`. ``status`` is passed, not implemented, wrong answer or raised."""

    name: str
    status: str
    cases_passed: int
    cases_total: int
    details: list[tuple[str, str]] = field(default_factory=list)  # (label, text) lines for the reader

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return f"{self.name}: PASSED ({self.cases_total} of {self.cases_total} cases)"
        if self.status == "not implemented":
            head = f"{self.name}: NOT DONE YET - the function still raises NotImplementedError"
        else:
            head = f"{self.name}: FAILED ({self.status} on case {self.cases_passed + 1} of {self.cases_total})"
        return "\n".join([head, *(f"  {label + ':':<9} {text}" for label, text in self.details)])

    def __repr__(self) -> str:
        return f"<Verdict {self.name}: {self.status}>"

    def raise_if_failed(self) -> Verdict:
        if not self.passed:
            raise ExerciseFailed(str(self))
        return self


# ---------------------------------------------------------------- registry


def exercise(name: str) -> Callable[[CaseFactory], CaseFactory]:
    """Decorator: register the function that yields the :class:`Case` s of exercise ``name``."""

    def register(factory: CaseFactory) -> CaseFactory:
        if name in _REGISTRY and _REGISTRY[name][1] != factory.__module__:
            raise ValueError(f"exercise {name!r} is registered twice: in {_REGISTRY[name][1]} and {factory.__module__}")
        _REGISTRY[name] = (factory, factory.__module__)
        return factory

    return register


def _discover() -> None:
    """Import every ``bralib/exercises/chNN.py`` once, so their ``@exercise`` decorators run."""
    global _discovered
    if _discovered:
        return
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if CHECK_MODULE.match(module.name):
            try:
                importlib.import_module(f"{__name__}.{module.name}")
            except Exception as err:
                where = f"bralib/exercises/{module.name}.py"
                raise ImportError(f"cannot load the exercise checks in {where}: {err}") from err
    _discovered = True


def names() -> list[str]:
    """Every registered exercise name, sorted."""
    _discover()
    return sorted(_REGISTRY)


def cases(name: str) -> list[Case]:
    """The cases of exercise ``name``; a clear error lists the known names when it does not exist."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"no exercise check named {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return list(_REGISTRY[name][0]())


# ---------------------------------------------------------------- the learner's files


def load_function(name: str, *, solution: bool = False, manifest: Path | str | None = None) -> Callable:
    """Function ``name`` from the learner's ``exercises/NN_slug.py`` (or from ``exercises/solutions/``).

    The file is read afresh on every call, so edits count without restarting a notebook's kernel.
    """
    from bralib.book import load_book

    chapter = load_book(manifest).chapter_for_exercise(name)
    path = chapter.solution_file if solution else chapter.exercise_file
    if not path.is_file():
        raise FileNotFoundError(
            f"exercise {name!r} belongs to {chapter.file}, so it must live in {path}, which is missing"
        )
    module_name = f"_bralib_exercise_{'solution_' if solution else ''}{chapter.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise AttributeError(f"{path} defines no function named {name!r}")
    return fn


# ---------------------------------------------------------------- checking


def check(name: str, fn: Callable | None = None, *, verbose: bool = True) -> Verdict:
    """Run exercise ``name``'s cases on ``fn`` (default: the learner's function) and print the verdict."""
    case_list = cases(name)
    verdict = run_cases(name, fn if fn is not None else load_function(name), case_list)
    if verbose:
        print(verdict)
    return verdict


def run_cases(name: str, fn: Callable, case_list: list[Case]) -> Verdict:
    """Call ``fn`` on each case until one goes wrong; the verdict describes that one."""
    for i, case in enumerate(case_list):
        details = [("tried", case.description), ("called", _call_text(fn, case))]
        try:
            got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))  # copies: a learner may mutate
        except NotImplementedError:
            return Verdict(name, "not implemented", i, len(case_list), [("next", _where_to_edit(fn))])
        except Exception as err:  # any error in the learner's code is reported, not raised
            details.append(("raised", f"{type(err).__name__}: {err}{_location(err)}"))
            return Verdict(name, "raised", i, len(case_list), _with_hint(details, case))
        problem = _judge(got, case)
        if problem is not None:
            if case.verify is None:
                details.append(("expected", describe(case.expected)))
            details += [("got", describe(got)), ("problem", problem)]
            return Verdict(name, "wrong answer", i, len(case_list), _with_hint(details, case))
    return Verdict(name, "passed", len(case_list), len(case_list))


def _judge(got: Any, case: Case) -> str | None:
    if case.verify is None:
        return compare(got, case.expected, atol=case.atol, rtol=case.rtol)
    try:
        return case.verify(got)
    except Exception as err:  # a result of the wrong kind can break the check itself
        return f"the result could not be checked ({type(err).__name__}: {err})"


def _with_hint(details: list[tuple[str, str]], case: Case) -> list[tuple[str, str]]:
    return details + [("hint", case.hint)] if case.hint else details


def _call_text(fn: Callable, case: Case) -> str:
    parts = [describe(a, short=True) for a in case.args]
    parts += [f"{k}={describe(v, short=True)}" for k, v in case.kwargs.items()]
    return f"{getattr(fn, '__name__', 'fn')}({', '.join(parts)})"


def _location(err: BaseException) -> str:
    """Where the error happened in the learner's code: the innermost frame, as file and line."""
    frames = traceback.extract_tb(err.__traceback__)
    if len(frames) < 2:  # only our own frame: nothing of the learner's to point at
        return ""
    frame = frames[-1]
    return f"  (at {_short_path(frame.filename)}, line {frame.lineno}, in {frame.name})"


def _where_to_edit(fn: Callable) -> str:
    code = getattr(fn, "__code__", None)
    where = f"{_short_path(code.co_filename)}, line {code.co_firstlineno}" if code else "your function"
    return f"fill in {getattr(fn, '__name__', 'the function')} in {where}, then run the check again"


def _short_path(filename: str) -> str:
    """The file relative to the current folder or, failing that, to the book's root (the folder with book.toml)."""
    path, cwd = Path(filename).resolve(), Path.cwd().resolve()
    if path.is_relative_to(cwd):
        return str(path.relative_to(cwd))
    root = next((folder for folder in path.parents if (folder / "book.toml").is_file()), None)
    return str(path.relative_to(root)) if root else filename


# ---------------------------------------------------------------- comparing and describing


def compare(got: Any, expected: Any, *, atol: float = 1e-6, rtol: float = 1e-5, where: str = "") -> str | None:
    """What differs between ``got`` and ``expected``, in words, or None when they match.

    Tensors and arrays: same shape and values within tolerance. Floats: within tolerance. Ints: equal and
    integral. Tuples, lists and dicts: element by element. Anything else: ``==``.
    """
    at = f" at {where}" if where else ""
    if _is_tensor(expected) or _is_array(expected):
        return _compare_arrays(got, expected, atol, rtol, at)
    if isinstance(expected, bool) or expected is None:
        return None if got is expected or got == expected else f"expected {expected!r}{at}, got {describe(got)}"
    if isinstance(expected, numbers.Integral):
        if not isinstance(got, numbers.Integral) or isinstance(got, bool):
            tip = " (// divides whole numbers and keeps an int)" if isinstance(got, float) else ""
            return f"expected the int {expected}{at}, got {describe(got)}{tip}"
        return None if got == expected else f"expected {expected}{at}, got {got}"
    if isinstance(expected, numbers.Real):
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            return f"expected a number{at}, got {describe(got)}"
        return (
            None
            if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
            else f"expected {expected!r}{at}, got {got!r}"
        )
    if isinstance(expected, tuple | list):
        if not isinstance(got, tuple | list):
            return f"expected a {type(expected).__name__}{at}, got {describe(got)}"
        if len(got) != len(expected):
            return f"expected {len(expected)} items{at}, got {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            problem = compare(g, e, atol=atol, rtol=rtol, where=f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"expected a dict with keys {sorted(expected)}{at}, got {describe(got)}"
        for key in expected:
            problem = compare(got[key], expected[key], atol=atol, rtol=rtol, where=f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    return None if got == expected else f"expected {expected!r}{at}, got {describe(got)}"


def _compare_arrays(got: Any, expected: Any, atol: float, rtol: float, at: str) -> str | None:
    import numpy as np

    kind = "torch.Tensor" if _is_tensor(expected) else "numpy array"
    if not (_is_tensor(got) or _is_array(got)):
        return f"expected a {kind}{at}, got {describe(got)}"
    got_np, expected_np = _to_numpy(got), _to_numpy(expected)
    if got_np.shape != expected_np.shape:
        return f"expected shape {tuple(expected_np.shape)}{at}, got shape {tuple(got_np.shape)}"
    if expected_np.dtype == bool or got_np.dtype == bool:
        wrong = got_np != expected_np
    else:
        wrong = ~np.isclose(
            got_np.astype(np.float64), expected_np.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True
        )
    if not wrong.any():
        return None
    first = tuple(int(i) for i in np.argwhere(wrong)[0])
    message = (
        f"{int(wrong.sum())} of {wrong.size} values differ{at}; first at index {first}: "
        f"expected {expected_np[first].item()!r}, got {got_np[first].item()!r}"
    )
    if expected_np.dtype != bool:
        diff = np.abs(got_np.astype(np.float64) - expected_np.astype(np.float64))
        message += f" (largest difference {np.nanmax(diff):.3g})"
    return message


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "shape")


def _to_numpy(value: Any):
    return value.detach().cpu().numpy() if _is_tensor(value) else value


def describe(value: Any, short: bool = False) -> str:
    """A one-line description: shape and dtype for tensors and arrays, type and clipped repr for the rest."""
    if _is_tensor(value) or _is_array(value):
        dtype = str(value.dtype).replace("torch.", "")
        head = f"{'tensor' if _is_tensor(value) else 'array'} of shape {tuple(value.shape)}, {dtype}"
        if short:
            return head
        array = _to_numpy(value)
        values = array.tolist() if array.dtype == bool else array.round(4).tolist()
        body = " ".join(str(values).split())
        return f"{head}: {body[:160]}{' ...' if len(body) > 160 else ''}"
    text = repr(value)
    limit = 60 if short else 200
    clipped = f"{text[:limit]}{' ...' if len(text) > limit else ''}"
    if short or value is None or isinstance(value, bool | str):
        return clipped
    return f"{type(value).__name__} {clipped}"
