"""Exercise checks: run a learner's function on a few cases and say, in words, what went right or wrong.

Learners call :func:`check`::

    from bralib.exercises import check
    check("tokens_to_attend")          # the function of that name in exercises/NN_slug.py, read afresh
    check("tokens_to_attend", my_fn)   # or any function you pass

It prints a verdict (what was tried, what was expected, what came back; never a bare traceback for a wrong
answer) and returns it: ``verdict.passed`` tells a test, ``verdict.raise_if_failed()`` raises
:class:`ExerciseFailed` (an ``AssertionError``) with the same text.

Every check runs the learner's function in a child process with a time limit (:data:`DEFAULT_TIMEOUT`): an
endless loop, a ``sys.exit(0)``, an ``os._exit(0)`` or a crash then gives a FAILED verdict that says so, and
never ends or hangs the notebook or the ``bralib exercise check`` command.

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
import multiprocessing
import numbers
import pickle
import pkgutil
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECK_MODULE = re.compile(r"^ch\d+$")  # bralib/exercises/ch00.py, ch01.py, ...
DEFAULT_TIMEOUT = 60.0  # seconds a check may take, all its cases together

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
    """The outcome of :func:`check`.

    ``status`` is passed, not implemented, wrong answer, raised, exited (the code ended its process), timed out
    or cannot load (the learner's file failed to import).
    """

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
        elif self.status == "cannot load":
            head = f"{self.name}: FAILED (cannot load your function)"
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
    # Where it came from, so that check() can load it afresh in its child process instead of pickling it.
    fn.__bralib_exercise__ = (name, solution, None if manifest is None else str(Path(manifest).resolve()))
    return fn


# ---------------------------------------------------------------- checking


def check(
    name: str,
    fn: Callable | None = None,
    *,
    verbose: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    solution: bool = False,
    manifest: Path | str | None = None,
) -> Verdict:
    """Run exercise ``name``'s cases on ``fn`` and print the verdict.

    ``fn`` defaults to the learner's function in ``exercises/NN_slug.py`` (``solution=True``: the answer in
    ``exercises/solutions/``), read afresh from ``manifest``'s book. The cases run in a child process that may
    take ``timeout`` seconds in all; see :func:`run_isolated`.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    total = len(cases(name))  # an unknown name is an error here, in the caller's process
    verdict = run_isolated(name, fn, total, timeout=timeout, solution=solution, manifest=manifest)
    if verbose:
        print(verdict)
    return verdict


def run_cases(
    name: str, fn: Callable, case_list: list[Case], on_case: Callable[[int, Case], None] | None = None
) -> Verdict:
    """Call ``fn`` on each case until one goes wrong; the verdict describes that one.

    ``on_case(i, case)`` is called before case i runs (the child process reports its progress with it).
    """
    for i, case in enumerate(case_list):
        if on_case is not None:
            on_case(i, case)
        details = [("tried", case.description), ("called", _call_text(fn, case))]
        try:
            got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))  # copies: a learner may mutate
        except NotImplementedError:
            return Verdict(name, "not implemented", i, len(case_list), [("next", _where_to_edit(fn))])
        except SystemExit as err:  # sys.exit() or exit(): the check must still give a verdict
            details.append(("problem", f"your code called sys.exit({err.code!r}) {_location(err).strip()}: {_RETURN}"))
            return Verdict(name, "exited", i, len(case_list), _with_hint(details, case))
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


_RETURN = "a check needs your function to return its answer, not to end the program"


# ---------------------------------------------------------------- the child process


def run_isolated(
    name: str,
    fn: Callable | None,
    total: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    solution: bool = False,
    manifest: Path | str | None = None,
) -> Verdict:
    """Run the cases of ``name`` in a child process and wait at most ``timeout`` seconds for its verdict.

    The child loads the learner's file itself (so an import that loops or exits is caught too), from a
    "forkserver" process that imported bralib once: each check then starts in milliseconds. A function that
    exists only in the caller (defined in a notebook) reaches the child by "fork" where the system has it,
    else by pickling. The child reports each case before running it; a child that ends without a verdict, or
    runs past ``timeout`` (it is then killed), gives a FAILED verdict saying which case and why.
    """
    source = _source(name, fn, solution, manifest)
    if source is None:  # no fork and not picklable: run here, where only sys.exit can be caught
        return run_cases(name, fn, cases(name))
    context = _context(source[0])
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(name, source, send), daemon=True, name=f"check-{name}")
    child.start()
    send.close()  # the child holds the only sending end: its exit shows as end-of-file here
    progress = (0, "(before the first case: starting, and loading your file)")  # (case index, description)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not receive.poll(left):
                _stop(child)
                return _timed_out(name, progress, total, timeout)
            try:
                kind, payload = receive.recv()
            except (EOFError, OSError):  # the child closed its end without a verdict: let it finish exiting
                child.join(5)
                break
            if kind == "verdict":
                return payload
            progress = payload
    finally:
        receive.close()
        _stop(child)
    return _exited(name, progress, total, child.exitcode)


def _source(name: str, fn: Callable | None, solution: bool, manifest: Path | str | None) -> tuple | None:
    """How the child gets the function: ("file", solution, manifest) to load it, or ("object", fn)."""
    if fn is None:
        return ("file", solution, None if manifest is None else str(Path(manifest).resolve()))
    origin = getattr(fn, "__bralib_exercise__", None)
    if origin is not None and origin[0] == name:
        return ("file", origin[1], origin[2])
    if "fork" in multiprocessing.get_all_start_methods():
        return ("object", fn)
    try:
        pickle.dumps(fn)
    except Exception:
        return None
    return ("object", fn)


_FORKSERVER_READY = False


def _context(kind: str) -> multiprocessing.context.BaseContext:
    """fork for a caller's function object; forkserver (spawn where there is none) for a function from a file."""
    global _FORKSERVER_READY
    methods = multiprocessing.get_all_start_methods()
    if kind == "object":
        return multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if not _FORKSERVER_READY:  # import torch and every check once, in the server: children start warm
        _discover()
        checks = sorted({module for _, module in _REGISTRY.values()})
        context.set_forkserver_preload(["torch", __name__, *checks])
        _FORKSERVER_READY = True
    return context


def _child_main(name: str, source: tuple, send) -> None:
    """In the child: load the function, run the cases, send progress and the verdict."""
    try:
        if source[0] == "object" and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)  # a forked child must not use the parent's thread pool
        case_list = cases(name)
        if source[0] == "object":
            fn = source[1]
        else:
            try:
                fn = load_function(name, solution=source[1], manifest=source[2])
            except BaseException as err:  # noqa: BLE001 - an import may raise anything, sys.exit included
                send.send(("verdict", _cannot_load(name, err, len(case_list))))
                return
        verdict = run_cases(name, fn, case_list, on_case=lambda i, case: send.send(("case", (i, case.description))))
        send.send(("verdict", verdict))
    finally:
        send.close()


def _stop(child: multiprocessing.process.BaseProcess) -> None:
    """End the child if it still runs: SIGTERM, then SIGKILL (a learner's code may ignore SIGTERM)."""
    if child.is_alive():
        child.terminate()
        child.join(2)
    if child.is_alive():
        child.kill()
    child.join(5)


def _timed_out(name: str, progress: tuple[int, str], total: int, timeout: float) -> Verdict:
    index, description = progress
    details = [("tried", description)]
    details.append(
        ("problem", f"timed out after {timeout:g} s: your code was still running (an endless loop?) and was stopped")
    )
    return Verdict(name, "timed out", index, total, details)


def _exited(name: str, progress: tuple[int, str], total: int, exitcode: int | None) -> Verdict:
    index, description = progress
    details = [("tried", description)]
    if exitcode is not None and exitcode < 0:
        try:
            signame = signal.Signals(-exitcode).name
        except ValueError:
            signame = f"signal {-exitcode}"
        why = f"the process running your code was killed by {signame}{' (out of memory?)' * (signame == 'SIGKILL')}"
    else:
        why = f"your code ended the process running it (exit code {exitcode}, e.g. os._exit({exitcode})): {_RETURN}"
    details.append(("problem", f"{why}; the check could give no verdict"))
    return Verdict(name, "exited", index, total, details)


def _cannot_load(name: str, err: BaseException, total: int) -> Verdict:
    if isinstance(err, SystemExit):
        text = f"your file called sys.exit({err.code!r}) while it was being imported"
    else:
        text = f"{type(err).__name__}: {err}{_location(err)}"
    return Verdict(name, "cannot load", 0, total, [("error", text), ("next", "fix the file, then run the check again")])


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
