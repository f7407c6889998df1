"""plot_history: loss, learning rate and accuracy curves from a run's log.jsonl; several runs on one set of axes."""

import json

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bralib.viz import plot_history


def write_log(run_dir, losses, evals):
    run_dir.mkdir(parents=True)
    lines = [{"kind": "step", "step": i + 1, "loss": loss, "lr": 1e-3 * (i + 1)} for i, loss in enumerate(losses)]
    lines += [{"kind": "eval", "step": step, "top1": top1, "ema_top1": top1 + 1} for step, top1 in evals]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_curves_hold_the_logged_values(tmp_path):
    write_log(tmp_path / "a", [4.0, 2.0, 3.0, 1.0], [(2, 10.0), (4, 30.0)])
    fig = plot_history(tmp_path / "a", smooth=2)
    loss_axis, lr_axis, acc_axis = fig.axes
    assert np.allclose(loss_axis.lines[0].get_ydata(), [4.0, 3.0, 2.5, 2.0])  # trailing mean over 2 steps
    assert np.allclose(lr_axis.lines[0].get_ydata(), [1e-3, 2e-3, 3e-3, 4e-3])
    model, ema = acc_axis.lines
    assert list(model.get_xdata()) == [2, 4] and list(model.get_ydata()) == [10.0, 30.0]
    assert list(ema.get_ydata()) == [11.0, 31.0] and "EMA" in ema.get_label()
    plt.close(fig)


def test_runs_overlay_on_given_axes(tmp_path):
    write_log(tmp_path / "bra", [2.0, 1.0], [(2, 50.0)])
    write_log(tmp_path / "local", [2.0, 1.5], [(2, 40.0)])
    fig = plot_history(tmp_path / "bra")
    plot_history(tmp_path / "local", axes=fig.axes, label="local window")
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].lines[1].get_label() == "local window"
    plt.close(fig)


def test_errors_name_the_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training log"):
        plot_history(tmp_path / "missing")
    write_log(tmp_path / "empty", [], [])
    with pytest.raises(ValueError, match="has no training steps yet"):
        plot_history(tmp_path / "empty")
