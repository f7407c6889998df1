"""``bralib bench``: time every BRA backend on BiFormer's stage shapes (and optionally a whole model).

bralib bench                                   # CPU, BiFormer-T stage shapes, forward
bralib bench --backward --json benchmarks/cpu.json
bralib bench --device cuda --shapes biformer-s --backward --model --compile both
bralib bench --device cuda --dtype bfloat16 --shapes biformer-s --backward --backends gather lean triton
bralib bench --shapes custom --custom 28x28:128:4:4
"""

from __future__ import annotations

import argparse
import datetime
import sys

DTYPES = ("float32", "bfloat16", "float16", "float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bralib.bench.shapes import CUSTOM_HELP, STAGES
    from bralib.cli import at_least

    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of q, k, v (default: float32)")
    parser.add_argument(
        "--shapes", nargs="+", default=["biformer-t"], choices=[*STAGES, "custom"],
        help="stage-shape presets at 224x224 (T and S share their BRA shapes); 'custom' uses --custom",
    )  # fmt: skip
    parser.add_argument("--custom", action="append", default=[], metavar="SPEC", help=f"a custom shape: {CUSTOM_HELP}")
    parser.add_argument("--batch", type=at_least(1), default=None, help="batch size (default: 8 on CPU, 64 on CUDA)")
    parser.add_argument(
        "--backends", nargs="+", default=None, metavar="NAME",
        help="backends to time (default: gather sdpa lean dense flex, and triton on cuda; 'reference' is allowed but "
        "very slow; triton on cpu needs TRITON_INTERPRET=1 and is slow)",
    )  # fmt: skip
    parser.add_argument("--backward", action="store_true", help="also time forward+backward and measure memory")
    parser.add_argument("--repeats", type=at_least(1), default=15, help="timed rounds per variant (default: 15)")
    parser.add_argument("--warmup", type=at_least(0), default=3, help="untimed rounds first (default: 3)")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--figure", default=None, metavar="PATH", help="draw the figure here (default: JSON path .png)")
    parser.add_argument(
        "--update-auto", action="store_true",
        help="store the stage timings in measured.json for 'auto' (before --model, whose 'auto' then uses them)",
    )  # fmt: skip
    parser.add_argument("--model", action="store_true", help="also time a whole model per backend")
    parser.add_argument("--model-name", default="biformer_tiny", help="model for --model (default: biformer_tiny)")
    parser.add_argument(
        "--model-backends", nargs="+", default=None, metavar="NAME",
        help="backends for --model (default: gather sdpa lean dense auto)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", default="off", choices=("off", "on", "both"),
        help="torch.compile in --model: off (eager only), on (compiled only), both (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--compile-backends", nargs="+", default=None, metavar="NAME",
        help="with --compile on/both, compile only these --model backends (default: all; compiling a model takes "
        "minutes on CPU)",
    )  # fmt: skip
    parser.add_argument("--model-repeats", type=at_least(1), default=5, help="timed rounds in --model (default: 5)")
    parser.add_argument("--no-shapes", action="store_true", help="skip the per-stage part (only --model)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--report", default=None, metavar="JSON",
        help="measure nothing: print the tables of a stored run (and redraw its figure with --figure)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from bralib.bench import report
    from bralib.bench.measure import load_average, machine
    from bralib.bench.model_bench import DEFAULT_MODEL_BACKENDS, bench_model
    from bralib.bench.ops_bench import bench_shape, default_backends
    from bralib.bench.shapes import merge_duplicates, parse_custom, preset_shapes
    from bralib.ops.backends import BACKENDS, auto

    if args.report is not None:
        return _report_stored(args.report, args.figure)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bralib bench: --device cuda, but torch.cuda.is_available() is False on this machine")
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    batch = args.batch if args.batch is not None else (64 if device.type == "cuda" else 8)
    backends = tuple(args.backends or default_backends(device.type))
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        print(f"bralib bench: unknown backend(s) {unknown}; known: {list(BACKENDS)}")
        return 2
    model_backends = tuple(args.model_backends or ())
    unknown_model = [b for b in (*model_backends, *(args.compile_backends or ())) if b != "auto" and b not in BACKENDS]
    if unknown_model:
        print(f"bralib bench: unknown model backend(s) {unknown_model}; known: {['auto', *BACKENDS]}")
        return 2
    if "gather" not in backends:
        backends = ("gather", *backends)  # every ratio is against the gather
    try:
        shapes = [s for preset in args.shapes if preset != "custom" for s in preset_shapes(preset, batch)]
        shapes += [parse_custom(spec, batch) for spec in args.custom]
    except ValueError as err:
        print(f"bralib bench: {err}")
        return 2
    if "custom" in args.shapes and not args.custom:
        print("bralib bench: --shapes custom needs at least one --custom SPEC")
        return 2
    shapes = [] if args.no_shapes else merge_duplicates(shapes)

    results = {
        "kind": "bralib-bench", "schema": 1, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["bralib", *sys.argv[1:]]), "device": device.type,
        "dtype": args.dtype, "machine": machine(device), "repeats": args.repeats, "warmup": args.warmup,
        "load_before": load_average(), "shapes": [],
    }  # fmt: skip
    with tqdm(total=0, disable=args.no_progress, unit="call") as progress:
        for shape in shapes:
            results["shapes"].append(
                bench_shape(
                    shape, backends, device=device, dtype=dtype, repeats=args.repeats, warmup=args.warmup,
                    backward=args.backward, progress=progress,
                )
            )  # fmt: skip
        if args.update_auto and results["shapes"]:
            # Before the whole-model part, so that its "auto" already chooses from this run's measurements.
            print(f"wrote {report.update_measured(results)}")
            auto.reload_measured()
        if args.model:
            modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
            results["model"] = bench_model(
                args.model_name, tuple(args.model_backends or DEFAULT_MODEL_BACKENDS), device=device,
                train_batch=batch, compile_modes=modes, repeats=args.model_repeats, warmup=1, progress=progress,
                compile_backends=None if args.compile_backends is None else tuple(args.compile_backends),
            )  # fmt: skip
    results["load_after"] = load_average()
    print(report.report(results))
    if args.json:
        path = report.write_json(results, args.json)
        print(f"wrote {path}")
    figure_path = args.figure
    if figure_path is None and args.json and args.json.endswith(".json"):
        figure_path = args.json[: -len(".json")] + ".png"
    if figure_path and results["shapes"]:
        import matplotlib

        matplotlib.use("Agg")
        report.draw_figure(results).savefig(figure_path, dpi=120)
        print(f"wrote {figure_path}")
    return 0


def _report_stored(path: str, figure_path: str | None) -> int:
    """``--report``: the printed report of a stored run, and its figure redrawn where asked."""
    from bralib.bench import report

    try:
        results = report.load_results(path)
    except (OSError, ValueError) as err:
        print(f"bralib bench: cannot read {path}: {err}")
        return 2
    print(report.report(results))
    if figure_path and results["shapes"]:
        import matplotlib

        matplotlib.use("Agg")
        report.draw_figure(results).savefig(figure_path, dpi=120)
        print(f"wrote {figure_path}")
    return 0
