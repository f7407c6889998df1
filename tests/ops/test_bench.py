"""bralib bench: it measures what it says (saved bytes, ratios), writes JSON and a figure, and feeds "auto"."""

from __future__ import annotations

import json

import pytest
import torch

from bralib.bench import report
from bralib.bench.measure import interleaved, saved_bytes
from bralib.bench.model_bench import bench_model, set_backend
from bralib.bench.shapes import merge_duplicates, parse_custom, preset_shapes
from bralib.cli import main
from bralib.ops.backends.auto import explain_request, load_measured


def test_saved_bytes_counts_distinct_storages_once():
    a = torch.randn(100, requires_grad=True)
    b = torch.randn(100, requires_grad=True)
    count, out = saved_bytes(lambda: a * b)  # mul saves both operands
    assert count == 2 * 400
    count, out = saved_bytes(lambda: a[:50] * a[50:])  # two views of one storage: counted once, in full
    assert count == 400
    count, out = saved_bytes(lambda: (a * b).exp(), exclude=(a, b))  # exp saves its output; inputs excluded
    assert count == 400
    del out


def test_interleaved_rotates_and_reports_failures():
    calls = []
    tasks = {"x": lambda: calls.append("x"), "y": lambda: calls.append("y"), "bad": lambda: 1 / 0}
    wall, cpu, errors = interleaved(tasks, device=torch.device("cpu"), repeats=4, warmup=1)
    assert set(wall) == {"x", "y"} and all(len(t) == 4 for t in wall.values())
    assert "ZeroDivisionError" in errors["bad"]
    assert calls[2:] == ["x", "y", "y", "x", "x", "y", "y", "x"]  # warm-up, then a rotating order


def test_shapes_presets_custom_and_merging():
    tiny, small = preset_shapes("biformer-t", 8), preset_shapes("biformer-s", 8)
    assert [(s.height, s.dim, s.num_heads, s.topk, s.tokens_per_region) for s in tiny] == [
        (56, 64, 2, 1, 64), (28, 128, 4, 4, 16), (14, 256, 8, 16, 4),
    ]  # fmt: skip
    merged = merge_duplicates(tiny + small)
    assert [s.label for s in merged] == [f"BiFormer-T/S stage {i}" for i in (1, 2, 3)]
    assert parse_custom("28x14:32:4:3:7", 2).key() == (2, 28, 14, 32, 4, 3, 7)
    for bad, message in [("28x28", "is not"), ("30x30:32:4:4", "multiples of n_win"), ("28x28:30:4:4", "divide C"),
                         ("28x28:32:4:50", "topk must be")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_custom(bad, 1)


def test_bench_command_writes_table_json_figure_and_measurements(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bench.json"
    code = main([
        "bench", "--shapes", "custom", "--custom", "14x14:16:2:4", "--custom", "12x12:8:1:2:3", "--batch", "2",
        "--backward", "--repeats", "2", "--warmup", "1", "--backends", "sdpa", "lean", "dense",
        "--json", str(path), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "1.00x" in printed and "lean" in printed
    results = report.load_results(path)
    record = results["shapes"][0]
    assert set(record["forward_ms"]) == {"gather", "sdpa", "lean", "dense"}  # gather is always added
    assert set(record["train_ms"]) == {"gather", "sdpa", "lean", "dense"}
    assert all(err < 1e-5 for err in record["max_rel_error"].values())
    assert record["saved_bytes"]["lean"] < record["saved_bytes"]["gather"]
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    # The same run as measurements for "auto", written to a scratch copy of measured.json.
    measured = tmp_path / "measured.json"
    report.update_measured(results, measured)
    report.update_measured(results, measured)  # a second run of the same device/dtype replaces the first
    runs = load_measured(measured)
    assert len(runs) == 1 and runs[0]["device"] == "cpu"
    fastest = min(record["train_ms"], key=record["train_ms"].get)
    choice = explain_request("cpu", torch.float32, 14, 14, n_win=7, topk=4, needs_grad=True, runs=runs)
    assert choice.backend == fastest
    # --report prints a stored run again (measuring nothing) and redraws its figure.
    assert main(["bench", "--report", str(path), "--figure", str(tmp_path / "again.png")]) == 0
    assert report.report(results) in capsys.readouterr().out
    assert (tmp_path / "again.png").stat().st_size > 10_000
    assert main(["bench", "--report", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().out


def test_bench_command_rejects_bad_requests(capsys):
    for argv, message in [
        (["--shapes", "custom"], "--shapes custom needs at least one --custom SPEC"),
        (["--backends", "nope"], "unknown backend(s) ['nope']"),
        (["--model", "--model-backends", "gather", "nope"], "unknown model backend(s) ['nope']"),
        (["--shapes", "custom", "--custom", "7x7"], "is not HxW:C:heads:topk"),
    ]:
        assert main(["bench", *argv, "--no-progress"]) == 2
        assert message in capsys.readouterr().out


def test_model_bench_on_a_small_biformer():
    small = dict(dims=(16, 32, 64, 64), depths=(1, 1, 1, 1), heads=(1, 2, 4, 4), topks=(1, 2, 4, None), n_win=2)
    result = bench_model(
        "biformer_tiny", ("gather", "lean", "flex", "auto"), device=torch.device("cpu"), train_batch=2,
        image_size=64, repeats=1, warmup=0, model_overrides=small,
    )  # fmt: skip
    assert set(result["train_ms"]) == {"gather", "lean", "auto"}  # flex cannot train on CPU
    assert set(result["infer_ms"]) == {"gather", "lean", "flex", "auto"}
    assert "no backward on cpu" in result["skipped"]["flex (train)"]
    assert result["saved_bytes"]["lean"] < result["saved_bytes"]["gather"]
    text = report.model_table(result)
    assert "train ms" in text and "lean" in text
    json.dumps(result)  # serialisable as it is


def test_set_backend_reaches_every_bra_module():
    import bralib

    model = bralib.create_model("biformer_tiny")
    assert set_backend(model, "lean") == 2 + 2 + 8  # the BRA stages 1-3 of BiFormer-T
    assert {m.backend for m in model.modules() if hasattr(m, "backend") and hasattr(m, "n_win")} == {"lean"}


def _stage_record(label, side, dim, heads, topk, forward, train, saved):
    return {
        "label": label, "batch": 8, "height": side, "width": side, "c_qk": dim, "c_v": dim, "num_heads": heads,
        "n_win": 7, "topk": topk, "tokens": side * side, "tokens_per_region": side * side // 49,
        "forward_ms": forward, "train_ms": train, "forward_cpu_ms": forward, "train_cpu_ms": train,
        "saved_bytes": saved, "max_rel_error": {}, "skipped": {}, "errors": {},
    }  # fmt: skip


def test_target_table_judges_each_cpu_target_on_the_best_backend():
    results = {
        "device": "cpu",
        "shapes": [
            _stage_record(
                "s1",
                56,
                64,
                2,
                1,
                {"gather": 20.0, "sdpa": 9.0, "lean": 11.0},
                {"gather": 60.0, "sdpa": 45.0, "lean": 41.0},
                {"gather": 100, "sdpa": 80, "lean": 20},
            ),
            _stage_record(
                "s2",
                28,
                128,
                4,
                4,
                {"gather": 20.0, "sdpa": 10.5},
                {"gather": 60.0, "sdpa": 30.0},
                {"gather": 100, "sdpa": 60},
            ),
            _stage_record("other", 14, 16, 2, 4, {"gather": 1.0, "sdpa": 0.1}, {}, {}),
        ],  # fmt: skip
        "model": {"model": "biformer_tiny", "train_ms": {"gather": 130.0, "auto": 100.0, "gather compiled": 50.0}},
    }
    lines = report.target_table(results).splitlines()
    rows = {tuple(line.split()[:4]): line for line in lines[2:]}
    assert rows[("forward", "speed-up", "stage", "1")].split()[4:7] == ["sdpa", "2.22x", "2.22x"]
    assert rows[("forward", "speed-up", "stage", "1")].endswith("yes")
    assert rows[("forward", "speed-up", "stage", "2")].endswith("NO")  # 1.90x < 2x
    assert "lean" in rows[("fwd+bwd", "speed-up", "stage", "1")] and rows[
        ("fwd+bwd", "speed-up", "stage", "1")
    ].endswith("NO")
    assert rows[("saved", "activations", "stage", "1")].split()[4:6] == ["lean", "0.20x"]
    assert rows[("saved", "activations", "stage", "2")].endswith("NO")  # 0.6x > 0.5x
    assert not any("other" in line for line in lines)  # not a BiFormer-T stage shape
    assert lines[-1].split()[:5] == ["training", "step", "biformer_tiny", "auto", "1.30x"]  # compiled runs ignored
    assert lines[-1].endswith("yes")
    assert report.target_table({**results, "device": "cuda"}) == ""
