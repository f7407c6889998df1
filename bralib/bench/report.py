"""Bench results as a table of ratios against ``"gather"``, a JSON file, a figure, and ``measured.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASELINE = "gather"
MB = 1024 * 1024


def speedup(results: dict[str, float], name: str) -> float | None:
    """How many times faster than the gather (gather ms / backend ms); None when either is missing."""
    base, value = results.get(BASELINE), results.get(name)
    return None if base is None or value is None else base / value


def memory_ratio(results: dict[str, int], name: str) -> float | None:
    """Saved bytes as a fraction of the gather's; None when either is missing."""
    base, value = results.get(BASELINE), results.get(name)
    return None if not base or value is None else value / base


def _cell(value: float | None, ratio: float | None, digits: int = 1) -> str:
    if value is None:
        return f"{'-':>16}"
    return f"{value:>9.{digits}f} {ratio:5.2f}x" if ratio is not None else f"{value:>9.{digits}f}       "


def shape_table(record: dict[str, Any]) -> str:
    """One shape: ms and speed-up for forward and forward+backward, saved MB and its ratio, error vs gather."""
    names = list(dict.fromkeys([*record["forward_ms"], *record["train_ms"]]))
    head = (
        f"{record['label']} ({record['height']}x{record['width']}, C={record['c_qk']}, {record['num_heads']} heads, "
        f"topk={record['topk']}, {record['tokens_per_region']}-token regions, B={record['batch']})"
    )
    lines = [
        head,
        f"  {'backend':<9}{'forward ms, speed-up':>22}{'fwd+bwd ms, speed-up':>22}{'saved MB, x gather':>22}  rel.err",
    ]
    for name in names:
        saved = record["saved_bytes"].get(name)
        error = record["max_rel_error"].get(name)
        lines.append(
            f"  {name:<9}{_cell(record['forward_ms'].get(name), speedup(record['forward_ms'], name)):>22}"
            f"{_cell(record['train_ms'].get(name), speedup(record['train_ms'], name)):>22}"
            f"{_cell(None if saved is None else saved / MB, memory_ratio(record['saved_bytes'], name)):>22}"
            f"  {'' if error is None else f'{error:.1e}'}"
        )
    for name, why in {**record.get("skipped", {}), **record.get("errors", {})}.items():
        lines.append(f"  {name}: not run ({why})")
    return "\n".join(lines)


def model_table(model: dict[str, Any]) -> str:
    """Whole model: training step and batch-1 inference ms per backend (and compiled), speed-up vs gather."""
    labels = list(dict.fromkeys([*model["train_ms"], *model["infer_ms"]]))
    lines = [
        f"{model['model']}: training step (B={model['train_batch']}, {model['image_size']}x{model['image_size']}) "
        f"and batch-1 inference",
        f"  {'backend':<18}{'train ms, speed-up':>22}{'infer ms, speed-up':>22}{'saved MB, x gather':>22}",
    ]
    for label in labels:
        compiled = label.endswith(" compiled")
        base = "gather compiled" if compiled else "gather"
        train, infer = model["train_ms"], model["infer_ms"]
        saved = model["saved_bytes"].get(label)
        saved_ratio = memory_ratio({BASELINE: model["saved_bytes"].get(base), label: saved}, label)
        lines.append(
            f"  {label:<18}"
            f"{_cell(train.get(label), _ratio(train.get(base), train.get(label)), 0):>22}"
            f"{_cell(infer.get(label), _ratio(infer.get(base), infer.get(label)), 1):>22}"
            f"{_cell(None if saved is None else saved / MB, saved_ratio):>22}"
        )
    for name, why in {**model.get("skipped", {}), **model.get("errors", {})}.items():
        lines.append(f"  {name}: not run ({why})")
    return "\n".join(lines)


def _ratio(base: float | None, value: float | None) -> float | None:
    return None if base is None or value is None else base / value


# The CPU targets of the speed issue: (what, shapes it applies to, metric, threshold, at least / at most).
TARGET_STAGES = {"stage 1": (56, 64, 2, 1), "stage 2": (28, 128, 4, 4), "stage 3": (14, 256, 8, 16)}
CPU_TARGETS = (
    ("forward speed-up", ("stage 1", "stage 2"), "forward", 2.0),
    ("fwd+bwd speed-up", ("stage 1", "stage 2"), "train", 1.5),
    ("saved activations", ("stage 1", "stage 2", "stage 3"), "saved", 0.5),
)
MODEL_TARGET = 1.3  # BiFormer-T training step, speed-up of the best backend


def _stage_of(record: dict[str, Any]) -> str | None:
    """Which BiFormer-T BRA stage (at 224x224) a shape record is, if any."""
    key = (record["height"], record["c_qk"], record["num_heads"], record["topk"])
    matches = [name for name, stage in TARGET_STAGES.items() if stage == key and record["width"] == record["height"]]
    return matches[0] if matches else None


def _best(values: dict[str, float], base: float | None, lower_is_better: bool = True) -> tuple[str, float] | None:
    """(backend, ratio against ``base``) of the best backend other than the baseline: speed-up or memory ratio."""
    rivals = {name: value for name, value in values.items() if name != BASELINE and value}
    if not rivals or not base:
        return None
    name = min(rivals, key=rivals.get) if lower_is_better else max(rivals, key=rivals.get)
    return name, base / rivals[name]


def target_table(results: dict[str, Any]) -> str:
    """The CPU targets, side by side with what this run measured (wall-clock ratios; CPU-time ratios beside them).

    Empty when the run was not on CPU or has none of the BiFormer-T shapes the targets are about.
    """
    if results.get("device") != "cpu":
        return ""
    stages = {_stage_of(r): r for r in results.get("shapes", []) if _stage_of(r)}
    rows = []
    for what, names, metric, threshold in CPU_TARGETS:
        for stage_name in names:
            record = stages.get(stage_name)
            if record is None:
                continue
            if metric == "saved":
                saved = record["saved_bytes"]
                rivals = {n: b for n, b in saved.items() if n != BASELINE}
                if not rivals or not saved.get(BASELINE):
                    continue
                name = min(rivals, key=rivals.get)
                ratio = rivals[name] / saved[BASELINE]
                rows.append(
                    (what, stage_name, name, f"{ratio:.2f}x", "(bytes)", f"<= {threshold}x", ratio <= threshold)
                )
                continue
            wall, cpu = record[f"{metric}_ms"], record.get(f"{metric}_cpu_ms", {})
            best = _best(wall, wall.get(BASELINE))
            if best is None:
                continue
            name, ratio = best
            cpu_ratio = _ratio(cpu.get(BASELINE), cpu.get(name))
            cpu_text = "" if cpu_ratio is None else f"{cpu_ratio:.2f}x"
            rows.append((what, stage_name, name, f"{ratio:.2f}x", cpu_text, f">= {threshold}x", ratio >= threshold))
    model = results.get("model")
    if model and model.get("train_ms"):
        eager = {n: ms for n, ms in model["train_ms"].items() if not n.endswith(" compiled")}
        best = _best(eager, eager.get(BASELINE))
        if best is not None:
            name, ratio = best
            cpu = model.get("train_cpu_ms", {})
            cpu_ratio = _ratio(cpu.get(BASELINE), cpu.get(name))
            cpu_text = "" if cpu_ratio is None else f"{cpu_ratio:.2f}x"
            rows.append(("training step", model["model"], name, f"{ratio:.2f}x", cpu_text, f">= {MODEL_TARGET}x",
                         ratio >= MODEL_TARGET))  # fmt: skip
    if not rows:
        return ""
    lines = [
        "CPU targets (best backend against gather; met or not on the wall-clock ratio):",
        f"  {'target':<19}{'where':<15}{'best':<8}{'wall':>7}{'CPU time':>10}{'target':>9}  met",
    ]
    for what, where, name, wall_text, cpu_text, target, met in rows:
        lines.append(
            f"  {what:<19}{where:<15}{name:<8}{wall_text:>7}{cpu_text:>10}{target:>9}  {'yes' if met else 'NO'}"
        )
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    """The whole printed report: where it ran, then one table per shape, then the model table."""
    load = results.get("load_before"), results.get("load_after")
    if results.get("shapes"):
        rounds = f"median of {results['repeats']} interleaved rounds after {results['warmup']} warm-up" + (
            f" ({results['model'].get('repeats', '?')} rounds for the whole model)" if results.get("model") else ""
        )
    else:
        rounds = f"whole model only: median of {(results.get('model') or {}).get('repeats', '?')} interleaved rounds"
    lines = [
        f"bralib bench: {results['device']} {results['dtype']}, {results['machine'].get('processor')}, "
        f"{results['machine'].get('torch_threads')} threads, torch {results['machine'].get('torch')}; {rounds}",
        f"load average (1, 5, 15 min) before {load[0]}, after {load[1]}",
        "speed-up = gather ms / backend ms (higher is better); saved = activation bytes kept for the backward "
        "beyond the inputs (lower is better)",
        "",
    ]
    for record in results.get("shapes", []):
        lines += [shape_table(record), ""]
    if results.get("model"):
        lines += [model_table(results["model"]), ""]
    targets = target_table(results)
    if targets:
        lines += [targets, ""]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def load_results(path: Path | str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("kind") != "bralib-bench":
        raise ValueError(f"{path} is not a bralib bench result (no kind='bralib-bench')")
    return data


def draw_figure(results: dict[str, Any], title: str | None = None):
    """Speed-up against the gather (forward, forward+backward) and saved-memory ratio, per stage and backend."""
    import matplotlib.pyplot as plt
    import numpy as np

    records = results["shapes"]
    names = list(dict.fromkeys(n for r in records for n in [*r["forward_ms"], *r["train_ms"]]))
    panels = [
        ("forward: speed-up vs gather", lambda r, n: speedup(r["forward_ms"], n)),
        ("forward+backward: speed-up vs gather", lambda r, n: speedup(r["train_ms"], n)),
        ("saved activations: x gather (lower is better)", lambda r, n: memory_ratio(r["saved_bytes"], n)),
    ]
    # The CPU targets as dashed lines (forward >= 2x, forward+backward >= 1.5x, saved <= 0.5x of the gather).
    targets = {metric: threshold for _, _, metric, threshold in CPU_TARGETS} if results["device"] == "cpu" else {}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    x = np.arange(len(records))
    width = 0.8 / max(len(names), 1)
    for ax, (panel_title, value_of), metric in zip(axes, panels, ("forward", "train", "saved"), strict=True):
        for i, name in enumerate(names):
            values = [value_of(r, name) for r in records]
            heights = [v if v is not None else np.nan for v in values]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, heights, width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        if metric in targets:
            ax.axhline(targets[metric], color="gray", linestyle="--", linewidth=1.0, label="CPU target")
        ax.set_yscale("log")
        ax.set_xticks(x, [r["label"].replace("stage", "\nstage") for r in records], fontsize=8)
        ax.set_title(panel_title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    machine = results["machine"]
    fig.suptitle(
        title
        or f"bralib bench, {results['device']} {results['dtype']} ({machine.get('processor')}, "
        f"{machine.get('torch_threads')} threads), {results.get('date', '')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def measured_run(results: dict[str, Any]) -> dict[str, Any]:
    """The part of a bench result that ``backend="auto"`` reads: per shape, median ms per backend."""
    machine = results["machine"]
    where = machine.get("gpu") or f"{machine.get('processor')}, {machine.get('torch_threads')} threads"
    keys = ("label", "batch", "height", "width", "num_heads", "topk", "n_win", "tokens", "tokens_per_region")
    return {
        "source": f"bralib bench on {where}, torch {machine.get('torch')}, {results.get('date', '')}",
        "device": results["device"],
        "dtype": results["dtype"],
        "shapes": [
            {**{k: r[k] for k in keys}, "forward_ms": r["forward_ms"], "train_ms": r["train_ms"]}
            for r in results["shapes"]
        ],
    }


def update_measured(results: dict[str, Any], path: Path | str | None = None) -> Path:
    """Store this run in measured.json, replacing earlier bench runs of the same device and dtype."""
    from bralib.ops.backends.auto import MEASURED_PATH

    path = MEASURED_PATH if path is None else Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {"schema": 1, "runs": []}
    run = measured_run(results)
    data["runs"] = [
        r
        for r in data["runs"]
        if not (r["device"] == run["device"] and r["dtype"] == run["dtype"] and r["source"].startswith("bralib bench"))
    ] + [run]
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
