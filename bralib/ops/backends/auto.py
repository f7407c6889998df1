"""How ``backend="auto"`` chooses: from timings measured by ``bralib bench`` and stored in ``measured.json``.

No backend wins everywhere: the best one depends on the device, the dtype, the shape (tokens per region,
how many regions are routed, how many tokens in all) and on whether a backward is needed. ``auto`` finds
the measured shape nearest to the request on the same device (same dtype if measured, else the nearest
dtype that was), drops the backends that cannot run the request (wrong device or dtype, no backward
where one is needed, compiled-only outside ``torch.compile``) and takes the fastest of the rest.
:func:`explain_choice` returns the whole reasoning; ``bralib.ops.explain_backend`` prints it.

``measured.json`` holds "runs" (one per ``bralib bench --update-auto`` or transcription), each with its
device, dtype, machine and a list of shapes with ``forward_ms`` and ``train_ms`` (forward + backward)
per backend. Missing or unmeasured devices fall back to a fixed rule, stated in the explanation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

MEASURED_PATH = Path(__file__).with_name("measured.json")
FALLBACK = "sdpa"  # runs on every device and dtype, fused attention where the device has it


def load_measured(path: Path | str | None = None) -> list[dict]:
    """The stored runs, [] when the file is missing (a fresh checkout before any bench)."""
    path = MEASURED_PATH if path is None else Path(path)
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if data.get("schema") != 1 or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path} is not a bralib measured-backends file (schema 1 with a 'runs' list)")
    return data["runs"]


_RUNS: list[dict] = load_measured()


def reload_measured() -> None:
    """Re-read measured.json (after ``bralib bench --update-auto`` rewrote it in this process)."""
    global _RUNS
    _RUNS = load_measured()


@dataclass
class BackendChoice:
    """What ``"auto"`` picked for a request, and why."""

    backend: str
    request: str
    reasons: list[str] = field(default_factory=list)
    measured_ms: dict[str, float] = field(default_factory=dict)  # the nearest measured shape, this request's mode
    excluded: dict[str, str] = field(default_factory=dict)  # backend -> why it cannot run this request
    chooser: str = "auto"  # "auto", or "named" when the caller named the backend

    def __str__(self) -> str:
        lines = [f"{self.chooser} -> {self.backend!r} for {self.request}"]
        lines += [f"  {reason}" for reason in self.reasons]
        if self.measured_ms:
            ranked = sorted(self.measured_ms.items(), key=lambda item: item[1])
            lines.append("  measured ms: " + ", ".join(f"{name} {ms:.3g}" for name, ms in ranked))
        lines += [f"  excluded {name}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines)


def shape_distance(record: dict, tokens_per_region: int, topk: int, tokens: int) -> float:
    """How far a measured shape is from the request: log-distance in region size, routed regions, tokens."""
    return (
        abs(math.log2(record["tokens_per_region"] / tokens_per_region))
        + abs(math.log2(record["topk"] / topk))
        + abs(math.log2(record["tokens"] / tokens))
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def explain_choice(
    q: torch.Tensor,
    v: torch.Tensor,
    *,
    n_win: int,
    topk: int,
    needs_grad: bool,
    runs: list[dict] | None = None,
    compiling: bool | None = None,
) -> BackendChoice:
    """The backend ``"auto"`` picks for q: (B, H, W, Cqk), v: (B, H, W, Cv), with the reasons."""
    return explain_request(
        q.device.type, q.dtype, q.shape[1], q.shape[2], n_win=n_win, topk=topk, needs_grad=needs_grad,
        runs=runs, compiling=compiling,
    )  # fmt: skip


def explain_request(
    device: str,
    dtype: torch.dtype,
    height: int,
    width: int,
    *,
    n_win: int,
    topk: int,
    needs_grad: bool,
    runs: list[dict] | None = None,
    compiling: bool | None = None,
) -> BackendChoice:
    """:func:`explain_choice` from the request's description alone (device type, dtype, map size)."""
    from bralib.ops.backends import BACKENDS

    runs = _RUNS if runs is None else runs
    compiling = torch.compiler.is_compiling() if compiling is None else compiling
    tokens = height * width
    tokens_per_region = max(tokens // (n_win * n_win), 1)
    mode = "train_ms" if needs_grad else "forward_ms"
    request = (
        f"{device} {_dtype_name(dtype)}, {height}x{width} tokens in {tokens_per_region}-token regions, "
        f"topk={topk} of {n_win * n_win}, {'forward+backward' if needs_grad else 'forward only'}"
    )
    choice = BackendChoice(backend=FALLBACK, request=request)
    for name, backend in BACKENDS.items():
        if backend.auto_devices is not None and device not in backend.auto_devices:
            # Asked first: on other devices its run-time checks (optional imports) are not even made.
            choice.excluded[name] = f"auto picks it only on {', '.join(backend.auto_devices)}"
            continue
        problem = backend.problem(device, dtype, needs_grad)
        if problem is None and backend.needs_compile and not compiling:
            problem = "compiles on first use (seconds per shape); auto uses it only inside torch.compile"
        if problem is not None:
            choice.excluded[name] = problem
    runnable = [name for name in BACKENDS if name not in choice.excluded and name != "reference"]
    if not runnable:
        reasons = "; ".join(f"{name} {why}" for name, why in choice.excluded.items())
        raise ValueError(f"no BRA backend can run {request}: {reasons}")

    candidates = [(run, shape) for run in runs if run.get("device") == device for shape in run.get("shapes", [])]
    if candidates:
        dtypes = {run["dtype"] for run, _ in candidates}
        wanted = _dtype_name(dtype)
        if wanted not in dtypes:
            # bf16/fp16 behave alike; float64 and unknowns are closest to float32.
            order = {"bfloat16": ["float16", "float32"], "float16": ["bfloat16", "float32"]}.get(wanted, ["float32"])
            wanted = next((d for d in order if d in dtypes), sorted(dtypes)[0])
            choice.reasons.append(f"no {_dtype_name(dtype)} measurements on {device}: using the {wanted} ones")
        candidates = [(run, shape) for run, shape in candidates if run["dtype"] == wanted]
        timed = [(r, s) for r, s in candidates if any(n in runnable for n in (s.get(mode) or {}))]
        candidates = timed or candidates
    if not candidates:
        choice.reasons.append(f"no measurements for {device} in measured.json: falling back to {FALLBACK!r}")
        choice.backend = FALLBACK if FALLBACK in runnable else runnable[0]
        return choice

    run, shape = min(candidates, key=lambda rs: shape_distance(rs[1], tokens_per_region, topk, tokens))
    measured = {n: ms for n, ms in (shape.get(mode) or {}).items() if ms is not None}
    choice.measured_ms = measured
    choice.reasons.append(
        f"nearest measured shape: {shape.get('label', '?')} ({shape['height']}x{shape['width']} tokens, "
        f"{shape['tokens_per_region']}-token regions, topk={shape['topk']}, B={shape['batch']}), "
        f"{run.get('source', 'unknown source')}"
    )
    usable = {n: ms for n, ms in measured.items() if n in runnable}
    if not usable:
        choice.backend = FALLBACK if FALLBACK in runnable else runnable[0]
        choice.reasons.append(f"no runnable backend was timed there: falling back to {choice.backend!r}")
        return choice
    choice.backend = min(usable, key=usable.get)
    choice.reasons.append(f"fastest runnable backend there ({'forward+backward' if needs_grad else 'forward'})")
    return choice


def explain_backend(
    *tensors: torch.Tensor,
    n_win: int,
    topk: int,
    num_heads: int | None = None,
    backend: str = "auto",
    needs_grad: bool | None = None,
    verbose: bool = True,
    scale: float | None = None,
    routing_scale: float | None = None,
    routing: str = "content",
    routing_index: torch.Tensor | None = None,
    return_routing: bool = False,
) -> BackendChoice:
    """Say which backend ``bra(..., backend=...)`` runs for a request, and why.

    Takes ``bra``'s own arguments, ``explain_backend(q, k, v, num_heads=..., n_win=..., topk=..., backend=...)``,
    and checks them as ``bra`` does; the short form ``explain_backend(q, v, n_win=..., topk=...)`` still works.
    q: (B, H, W, Cqk), k: like q, v: (B, H, W, Cv). The arguments that do not change the choice (scale,
    routing, ...) are accepted so that a ``bra`` call can be copied as it is. ``needs_grad`` defaults to what
    ``bra`` would see: grad mode on and an input requiring grad. Prints the explanation when ``verbose`` and
    returns it (``.backend`` is the name).
    """
    from bralib.ops.backends import get_backend
    from bralib.ops.validate import check_heads, check_positive_int, check_qkv, check_routing_index, check_topk

    if len(tensors) == 3:
        q, k, v = tensors
        check_qkv(q, k, v)
    elif len(tensors) == 2:
        (q, v), k = tensors, None
    else:
        raise TypeError(f"explain_backend takes (q, k, v) like bra, or (q, v); got {len(tensors)} tensors")
    check_positive_int("n_win", n_win)
    check_topk(topk, n_win)
    if num_heads is not None:
        check_heads("Cqk (q.shape[-1])", q.shape[-1], num_heads)
        check_heads("Cv (v.shape[-1])", v.shape[-1], num_heads)
    if routing_index is not None:
        check_routing_index(routing_index, q, n_win, topk)
    inputs = [t for t in (q, k, v) if t is not None]
    if needs_grad is None:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if backend == "auto":
        choice = explain_choice(q, v, n_win=n_win, topk=topk, needs_grad=needs_grad)
    else:
        choice = explain_named(get_backend(backend), q, v, n_win=n_win, topk=topk, needs_grad=needs_grad)
    if verbose:
        print(choice)
    return choice


def explain_named(
    backend, q: torch.Tensor, v: torch.Tensor, *, n_win: int, topk: int, needs_grad: bool
) -> BackendChoice:
    """A named backend is used as it is: say so, and whether it can run the request."""
    choice = explain_choice(q, v, n_win=n_win, topk=topk, needs_grad=needs_grad)
    named = BackendChoice(backend.name, choice.request, measured_ms=choice.measured_ms, chooser="named")
    named.reasons.append(
        f"backend={backend.name!r} was named: bra runs it as it is (auto would pick {choice.backend!r})"
    )
    problem = backend.problem(q.device.type, q.dtype, needs_grad)
    if problem is not None:
        named.reasons.append(f"it cannot run this request: it {problem}")
    return named
