"""Training curves from a run directory's ``log.jsonl``: loss and learning rate per step, accuracy per evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` steps (per-step losses are noisy)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_history(run_dir: str | Path, *, smooth: int = 20, axes: Any = None, label: str | None = None):
    """Draw a run's training loss, learning rate and top-1 (model and EMA) against the optimizer step.

    Args:
        run_dir: a directory written by ``bralib train`` (or its ``log.jsonl``).
        smooth: width of the trailing mean over the per-step loss (1: raw).
        axes: three matplotlib axes to draw into (to overlay several runs); new ones by default.
        label: legend label of this run (default: the directory name).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from bralib.train.runlog import read_log

    records = read_log(run_dir)
    steps = {r["step"]: r for r in records if r["kind"] == "step"}  # a step logged twice keeps its last line
    evals = {r["step"]: r for r in records if r["kind"] == "eval"}
    if not steps:
        raise ValueError(f"the log of {str(run_dir)!r} has no training steps yet")
    label = label or Path(run_dir).name
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    else:
        fig = axes[0].figure
    x = sorted(steps)
    loss_axis, lr_axis, acc_axis = axes
    loss_axis.plot(x, _smooth([steps[s]["loss"] for s in x], max(smooth, 1)), label=label)
    loss_axis.set(xlabel="optimizer step", ylabel="training loss", title=f"loss (mean of {smooth} steps)")
    lr_axis.plot(x, [steps[s]["lr"] for s in x], label=label)
    lr_axis.set(xlabel="optimizer step", ylabel="learning rate", title="warm-up + cosine")
    if evals:
        e = sorted(evals)
        (line,) = acc_axis.plot(e, [evals[s]["top1"] for s in e], "o-", label=f"{label}")
        if "ema_top1" in evals[e[0]]:
            acc_axis.plot(e, [evals[s]["ema_top1"] for s in e], "s--", color=line.get_color(), alpha=0.6,
                          label=f"{label} (EMA)")  # fmt: skip
    acc_axis.set(xlabel="optimizer step", ylabel="top-1 (%)", title="validation accuracy")
    for axis in axes:
        axis.grid(alpha=0.3)
    acc_axis.legend(fontsize=8)
    fig.tight_layout()
    return fig
