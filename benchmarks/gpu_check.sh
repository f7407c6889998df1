#!/usr/bin/env bash
# The one prepared GPU run: correctness of every CUDA path, then the speed numbers. Under 8 minutes on one
# H100-class GPU; every number lands as JSON (with device, versions and date) in benchmarks/, or in $OUT when
# that is set.
#
#   bash benchmarks/gpu_check.sh              # on a machine with a CUDA GPU, from anywhere in the repository
#   DRY_RUN=1 bash benchmarks/gpu_check.sh    # on a CPU: the same steps on tiny inputs, to check the script
#
# Needs a CUDA build of PyTorch, bralib installed (pip install -e .), triton (it comes with CUDA PyTorch on
# Linux) and, for Swin-T, timm (pip install timm; without it step 5 runs BiFormer-S alone and says so).
# Each step runs under its own time limit, so one slow step (compiling) cannot starve the others; a step that
# fails or times out is recorded in gpu_check.json and the script goes on. Rerun only what failed: every step
# is one line below, and its log is <step>.log next to the JSON.
#
#   1 tests     the CUDA rows of the backends' tests: every backend vs the reference in float32/float64 with
#               gradients, fp16/bf16 (dense's boolean mask, lean's recompute path), flex with one block per
#               region and with grouped 128-token blocks (forward and backward), the compiled triton kernels
#   2 bench     bralib bench at BiFormer-S's stage shapes, B = 64, bfloat16, forward and forward+backward,
#               saved activations and peak memory: gather sdpa lean dense triton
#   3 flex      the same for flex (compiles per shape, so apart)
#   4 swin      benchmarks/gpu_vs_swin.py: BiFormer-S per backend vs timm's Swin-T, AMP, batch 128, eager
#   5 compiled  the same, torch.compile'd (gather, triton)
#   then        gpu_check.json (steps, exit codes, seconds, test outcomes, versions) and measured_candidate.json
#               (measured.json with this run's bench numbers in place of the transcribed H100 ones: review it,
#               then copy it over bralib/ops/backends/measured.json so that "auto" uses it)
set -u
cd "$(dirname "$0")/.."
DEST="${OUT:-benchmarks}"
mkdir -p "$DEST"
PY="${PYTHON:-python}"
STATUS="$DEST/gpu_check_steps.tsv"
: > "$STATUS"
unset TRITON_INTERPRET  # compiled kernels: the interpreter is for CPU tests only
export PYTHONUNBUFFERED=1

if [ "${DRY_RUN:-0}" = "1" ]; then
    DEVICE=cpu
    BENCH_ARGS=(--device cpu --dtype float32 --shapes custom --custom 14x14:16:1:4 --batch 1 --repeats 1 --warmup 0)
    SWIN_ARGS=(--device cpu --batch 2 --steps 1 --rounds 1 --warmup 1 --image-size 112 --no-swin)
    MAIN_BACKENDS=(gather lean)
    SWIN_BACKENDS=(gather lean)
    COMPILED_BACKENDS=(gather)
    COMPILE_LIMIT=30  # compiling BiFormer-S on a CPU takes minutes: the dry run only shows the time limit at work
else
    DEVICE=cuda
    BENCH_ARGS=(--device cuda --dtype bfloat16 --shapes biformer-s --batch 64 --repeats 30 --warmup 5)
    SWIN_ARGS=(--device cuda --batch 128 --steps 8 --rounds 3 --warmup 3)
    MAIN_BACKENDS=(gather sdpa lean dense triton)
    SWIN_BACKENDS=(gather sdpa lean triton auto)
    COMPILED_BACKENDS=(gather triton)
    COMPILE_LIMIT=150
    if ! "$PY" -c "import timm" 2>/dev/null; then
        echo "timm is not importable: Swin-T is left out (pip install timm for the ratios)"
        SWIN_ARGS+=(--no-swin)
    fi
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $DEST/NAME.log, record exit and seconds
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (at most ${limit} s): $*"
    timeout --signal=INT --kill-after=15 "$limit" "$@" > "$DEST/$name.log" 2>&1
    local code=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" "$*" >> "$STATUS"
    tail -n 4 "$DEST/$name.log"
    echo "   exit $code after $((SECONDS - start)) s"
}

step tests 90 "$PY" -m pytest -q -p no:randomly -p no:cacheprovider -k cuda \
    tests/ops/test_backends_equivalence.py tests/ops/test_backends_triton.py tests/ops/test_backends_auto.py \
    --junitxml "$DEST/gpu_tests.xml"
step bench 90 "$PY" -m bralib.cli bench "${BENCH_ARGS[@]}" --backward --backends "${MAIN_BACKENDS[@]}" \
    --no-progress --json "$DEST/${DEVICE}_bench_biformer_s.json"
step flex 45 "$PY" -m bralib.cli bench "${BENCH_ARGS[@]}" --backward --backends gather flex --repeats 10 \
    --no-progress --json "$DEST/${DEVICE}_bench_biformer_s_flex.json"
step swin 90 "$PY" benchmarks/gpu_vs_swin.py "${SWIN_ARGS[@]}" --backends "${SWIN_BACKENDS[@]}" --compile off \
    --json "$DEST/gpu_vs_swin_eager.json"
step compiled "$COMPILE_LIMIT" "$PY" benchmarks/gpu_vs_swin.py "${SWIN_ARGS[@]}" --backends "${COMPILED_BACKENDS[@]}" \
    --compile on --json "$DEST/gpu_vs_swin_compiled.json"

"$PY" - "$DEST" "$DEVICE" <<'EOF'
"""Collect the run: gpu_check.json (device, versions, date, steps, test outcomes) and measured_candidate.json."""
import datetime
import json
import platform
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import torch

dest, device = Path(sys.argv[1]), sys.argv[2]


def version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


summary = {
    "kind": "bralib-gpu-check",
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"no CUDA GPU ({device} dry run)",
    "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                 **{name: version(name) for name in ("triton", "timm", "bralib")}},
    "steps": [],
}
for line in (dest / "gpu_check_steps.tsv").read_text().splitlines():
    name, code, seconds, command = line.split("\t", 3)
    summary["steps"].append({"step": name, "exit": int(code), "seconds": int(seconds), "command": command,
                             "timed_out": int(code) in (124, 137), "log": f"{name}.log"})
junit = dest / "gpu_tests.xml"
if junit.is_file():
    tests = {"passed": [], "failed": [], "skipped": []}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        if failure is not None:
            tests["failed"].append({"test": name, "message": (failure.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            tests["skipped"].append(name)
        else:
            tests["passed"].append(name)
    summary["tests"] = {key: (len(value) if key != "failed" else value) for key, value in tests.items()}
    summary["tests"]["passed_names"] = tests["passed"]
bench = dest / f"{device}_bench_biformer_s.json"
if bench.is_file():
    from bralib.bench import report
    from bralib.ops.backends.auto import MEASURED_PATH

    results = report.load_results(bench)
    summary["bench"] = {s["label"]: {"forward_ms": s["forward_ms"], "train_ms": s["train_ms"],
                                     "peak_bytes": s.get("peak_bytes"), "max_rel_error": s["max_rel_error"]}
                        for s in results["shapes"]}  # fmt: skip
    candidate = json.loads(MEASURED_PATH.read_text())
    # This run supersedes the transcribed numbers of the same device and dtype (auto would otherwise pick
    # between two runs of equal shapes by their order in the file).
    candidate["runs"] = [r for r in candidate["runs"] if not (r["device"] == results["device"]
                         and r["dtype"] == results["dtype"] and r["source"].startswith("transcribed"))]  # fmt: skip
    path = dest / "measured_candidate.json"
    path.write_text(json.dumps(candidate, indent=1) + "\n")
    report.update_measured(results, path)
(dest / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
print(f"wrote {dest / 'gpu_check.json'}")
failed = [s["step"] for s in summary["steps"] if s["exit"] != 0]
print("steps that failed or timed out:", ", ".join(failed) if failed else "none")
EOF
