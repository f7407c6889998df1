"""The triton backend (fused kernels that read routed regions by index) against "reference".

On a machine without a GPU the kernels run in Triton's interpreter: this module sets ``TRITON_INTERPRET=1``
before the kernels are first imported (``triton.jit`` reads it when it decorates them) and restores the
environment afterwards. In one process the kernels are either interpreted or compiled, so on a machine with
a GPU (and no TRITON_INTERPRET set) they are compiled and the CPU rows skip, saying so; the CUDA rows run
there (``benchmarks/gpu_check.sh``). The interpreter is slow: the CPU rows use one or two heads and few
channels, but BiFormer's real region geometry (56x56 in 64-token regions with k = 1, 28x28 in 16-token
regions with k = 4, 14x14 in 4-token regions with k = 16).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from bralib.bench.measure import saved_bytes
from bralib.ops import bra, route_regions
from bralib.ops.backends import BACKENDS
from bralib.ops.backends import triton as triton_backend
from bralib.ops.backends.auto import explain_request
from bralib.ops.backends.triton import Tiling, tiling_for, transposed_routing, triton_attention, unique_routing

HAVE_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (the [dev] extra installs it)")
HAVE_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU on this machine"))]


@pytest.fixture(scope="module")
def kernels_mode():
    """'interpreted' or 'compiled': how this process runs the kernels (decided once, at their first import)."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed (the [dev] extra installs it on Linux x86-64)")
    saved = os.environ.get("TRITON_INTERPRET")
    if triton_backend._loaded_kernels() is None and not (HAVE_CUDA and saved is None):
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield "interpreted" if triton_backend._kernels().INTERPRETED else "compiled"
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


@pytest.fixture
def on(kernels_mode):
    """on(device) -> torch.device, or a skip that says why this process cannot run that device's rows."""

    def device(name: str) -> torch.device:
        if name == "cpu" and kernels_mode != "interpreted":
            pytest.skip("kernels compiled for the GPU in this process; CPU rows run where TRITON_INTERPRET=1")
        if name == "cuda" and kernels_mode != "compiled":
            pytest.skip("kernels interpreted in this process (TRITON_INTERPRET=1); CUDA rows test compiled kernels")
        return torch.device(name)

    return device


def problem(shape, device, dtype=torch.float32, seed=0):
    """Random q, k, v (leaves), content routing, an output gradient and the kwargs of one request."""
    batch, height, width, c_qk, c_v, heads, n_win, topk = shape
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, height, width, c_qk, generator=gen) for _ in range(2))
    v, grad_out = (torch.randn(batch, height, width, c_v, generator=gen) for _ in range(2))
    _, index = route_regions(q, k, n_win=n_win, topk=topk)
    q, k, v, grad_out = (t.to(device, dtype) for t in (q, k, v, grad_out))
    return [t.requires_grad_() for t in (q, k, v)], index.to(device), grad_out, dict(num_heads=heads, n_win=n_win)


def outputs_and_grads(fn, qkv, index, grad_out, kwargs):
    out = fn(*qkv, index, scale=0.37, **kwargs)
    if out.numel() == 0:
        return (out, *(torch.zeros_like(t) for t in qkv))
    return (out, *torch.autograd.grad(out, qkv, grad_out))


def assert_matches_reference(qkv, index, grad_out, kwargs, tol=2e-5, **triton_kwargs):
    """Output and q/k/v gradients of triton vs the reference computed in float32 from the same inputs."""
    reference = [t.detach().float().requires_grad_() for t in qkv]
    expected = outputs_and_grads(BACKENDS["reference"].fn, reference, index, grad_out.float(), kwargs)
    got = outputs_and_grads(
        lambda *a, **kw: triton_attention(*a, **kw, **triton_kwargs), qkv, index, grad_out, kwargs
    )  # fmt: skip
    for g, e, name in zip(got, expected, ("out", "dq", "dk", "dv"), strict=True):
        assert g.shape == e.shape and g.dtype == qkv[0].dtype, name
        error = (g.float() - e).abs().max().item() / (e.abs().max().item() + 1e-30)
        assert error < tol, f"{name}: max error {error:.2e} (relative to max |ref|) exceeds {tol:.0e}"


# (B, H, W, Cqk, Cv, heads, n_win, topk)
STAGES = {
    "stage1-64-token-regions-k1": (1, 56, 56, 16, 16, 1, 7, 1),
    "stage2-16-token-regions-k4": (1, 28, 28, 32, 32, 1, 7, 4),  # head width 32, as in every BiFormer
    "stage3-4-token-regions-k16": (2, 14, 14, 32, 32, 1, 7, 16),
}
ODD = {
    "HneW-CqkneCv-nwin3": (2, 6, 9, 8, 4, 2, 3, 2),
    "k=S^2": (1, 6, 6, 8, 8, 1, 3, 9),  # every region routed
    "one-region": (2, 8, 8, 8, 8, 1, 1, 1),
    "3-heads-Cv<Cqk": (2, 12, 8, 12, 6, 3, 2, 3),  # head widths 4 and 2: padded to 16 inside
    "2x3-token-regions-k=S^2": (1, 4, 6, 4, 4, 1, 2, 4),
    "1-token-regions": (1, 7, 7, 8, 8, 1, 7, 5),  # 16 regions packed per tile
    "81-token-regions": (1, 18, 18, 8, 8, 1, 2, 3),  # larger than a 64-row tile: two query and key chunks
    "Cv>Cqk-HneW-2x3-token-regions": (1, 14, 21, 8, 16, 1, 7, 5),
}


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", STAGES.values(), ids=STAGES.keys())
def test_biformer_stage_shapes_match_reference(shape, device, on):
    assert_matches_reference(*problem(shape, on(device)))


@needs_triton
@pytest.mark.parametrize("shape", ODD.values(), ids=ODD.keys())
def test_odd_shapes_match_reference(shape, on):
    assert_matches_reference(*problem(shape, on("cpu"), seed=1))


@needs_triton
@pytest.mark.parametrize("regions_per_tile", [1, 4, 8])
def test_packed_small_regions_match_reference(regions_per_tile, on):
    """Stage 3's 4-token regions: padded alone (1), packed 4 (the default) or 8 per tile (the last tile half empty)."""
    qkv, index, grad_out, kwargs = problem((1, 14, 14, 16, 16, 1, 7, 16), on("cpu"), seed=2)
    tiling = tiling_for(4, 16, regions_per_tile=regions_per_tile)
    assert tiling.block_m == max(16, 4 * regions_per_tile) and tiling.tiles(49) == -(-49 // regions_per_tile)
    assert_matches_reference(qkv, index, grad_out, kwargs, tiling=tiling)


@needs_triton
def test_duplicate_routing_indices_count_once(on):
    """A region routed twice is attended once, as in the reference's mask (the routed set is a set)."""
    qkv, index, grad_out, kwargs = problem((2, 14, 14, 16, 16, 2, 7, 4), on("cpu"), seed=3)
    index = index.clone()
    index[..., 2] = index[..., 0]  # every row repeats its first region
    index[0, 5] = index[0, 5, 1]  # one row routes to one region four times
    assert_matches_reference(qkv, index, grad_out, kwargs)


@needs_triton
@pytest.mark.parametrize("regions_per_tile", [1, 4])
def test_non_finite_inputs_follow_the_rule(regions_per_tile, on):
    """A NaN or infinity reaches only the queries that route to it (bralib.ops.nonfinite), also in packed tiles."""
    qkv, index, _, kwargs = problem((1, 14, 14, 16, 16, 2, 7, 4), on("cpu"), seed=9)
    q, k, v = (t.detach().clone() for t in qkv)
    v[0, 0, 0, 3] = float("nan")  # region 0, head 0
    v[0, 13, 13, 12] = float("inf")  # region 48, head 1
    k[0, 6, 6, 9] = float("nan")  # region 24, head 1
    tiling = tiling_for(4, 4, regions_per_tile=regions_per_tile)
    got = triton_attention(q, k, v, index, scale=0.3, tiling=tiling, **kwargs)
    expected = bra(q, k, v, topk=4, routing_index=index, backend="reference", scale=0.3, **kwargs)
    reached = expected.isnan()
    assert reached.any() and not reached.all()
    assert torch.equal(got[~reached].isnan(), torch.zeros_like(got[~reached], dtype=torch.bool))  # no spill-over
    torch.testing.assert_close(got[~reached], expected[~reached], atol=2e-5, rtol=1e-4)
    if regions_per_tile > 1:  # packed tiles mark what they reach themselves; unpacked ones get inf or NaN there
        assert torch.equal(got.isnan(), reached)


@needs_triton
def test_empty_batch(on):
    qkv, index, grad_out, kwargs = problem((0, 14, 14, 16, 16, 2, 7, 4), on("cpu"))
    out = triton_attention(*qkv, index, scale=0.3, **kwargs)
    assert out.shape == (0, 14, 14, 16)
    out.sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in qkv)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32_reference(dtype, device, on):
    """Inputs rounded to half precision, compared with the float32 reference on those same rounded inputs."""
    qkv, index, grad_out, kwargs = problem((1, 14, 14, 32, 32, 1, 7, 4), on(device), dtype=dtype, seed=4)
    assert_matches_reference(qkv, index, grad_out, kwargs, tol=2e-2 if dtype == torch.bfloat16 else 3e-3)


@needs_triton
def test_strided_inputs(on):
    """q, k, v as channel slices of one qkv tensor (as in the layer), and as a channels-first permuted view."""
    device = on("cpu")
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(1, 14, 14, 3 * 16, generator=gen).to(device).requires_grad_()
    q, k, v = qkv.split(16, dim=-1)
    index = route_regions(q.detach(), k.detach(), n_win=7, topk=3)[1]
    grad_out = torch.randn(1, 14, 14, 16, generator=gen).to(device)
    assert_matches_reference([q, k, v], index, grad_out, dict(num_heads=2, n_win=7))
    channels_first = torch.randn(3, 1, 16, 14, 14, generator=gen).to(device)
    permuted = [t.permute(0, 2, 3, 1).requires_grad_() for t in channels_first]  # channel stride 196: copied
    assert_matches_reference(permuted, index, grad_out, dict(num_heads=2, n_win=7))


@needs_triton
def test_bra_and_layer_run_on_triton(on):
    from bralib.ops import BiLevelRoutingAttention

    device = on("cpu")
    qkv, index, _, _ = problem((1, 14, 14, 16, 16, 2, 7, 4), device, seed=6)
    expected = bra(*qkv, num_heads=2, n_win=7, topk=4, routing_index=index, backend="reference")
    got = bra(*qkv, num_heads=2, n_win=7, topk=4, routing_index=index, backend="triton")
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(16, 2, n_win=7, topk=4, backend="triton").to(device)
    x = torch.randn(1, 14, 14, 16, device=device, requires_grad=True)
    y = layer(x)
    (grad_x,) = torch.autograd.grad(y.sum(), x)
    layer.backend = "reference"
    torch.testing.assert_close(y, layer(x), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(grad_x, torch.autograd.grad(layer(x).sum(), x)[0], atol=2e-5, rtol=1e-4)


@needs_triton
def test_compiles_as_one_opaque_operator(on):
    """torch.compile(fullgraph=True) traces the backend without breaks (custom ops with fake shapes)."""
    qkv, index, grad_out, kwargs = problem((1, 14, 14, 16, 16, 2, 7, 4), on("cpu"), seed=8)
    compiled = torch.compile(triton_attention, backend="aot_eager", fullgraph=True)
    expected = outputs_and_grads(triton_attention, qkv, index, grad_out, kwargs)
    got = outputs_and_grads(compiled, qkv, index, grad_out, kwargs)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


@needs_triton
def test_saves_no_more_than_lean(on):
    """Counted with the bench's saved-tensor hooks: q, k, v (inputs), the index, the output and one lse per query."""
    qkv, index, _, kwargs = problem((2, 14, 14, 16, 16, 2, 7, 16), on("cpu"), seed=7)
    counts = {}
    for name in ("triton", "lean", "gather"):
        counts[name], out = saved_bytes(lambda name=name: BACKENDS[name].fn(*qkv, index, scale=0.3, **kwargs), qkv)
        del out
    batch, height, width, c_v = qkv[2].shape
    expected = batch * height * width * (c_v + kwargs["num_heads"]) * 4 + index.numel() * 4  # out, lse, int32 index
    assert counts["triton"] == expected
    assert counts["triton"] <= counts["lean"] and counts["triton"] * 10 < counts["gather"]


@needs_triton
def test_bench_times_triton(tmp_path, on):
    """``bralib bench --backend triton`` (argparse's prefix of --backends): timed, checked against the gather."""
    from bralib.bench import report
    from bralib.cli import main

    on("cpu")
    path = tmp_path / "bench.json"
    argv = ["bench", "--shapes", "custom", "--custom", "14x14:16:1:4", "--batch", "1", "--backward", "--repeats", "1",
            "--warmup", "0", "--backend", "lean", "triton", "--json", str(path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    record = report.load_results(path)["shapes"][0]
    assert set(record["train_ms"]) == {"gather", "lean", "triton"}
    assert record["max_rel_error"]["triton"] < 1e-5
    assert record["saved_bytes"]["triton"] <= record["saved_bytes"]["lean"]


# ---------------------------------------------------------------- pure Python: tiling, routing lists, auto, errors


def test_tiling_packs_small_regions_into_16_rows():
    assert tiling_for(64, 1) == Tiling(regions=1, rows=64, chunks=1, key_rows=64, slots=1)  # stage 1
    assert tiling_for(16, 4) == Tiling(regions=1, rows=16, chunks=1, key_rows=16, slots=4)  # stage 2: 64 keys a step
    assert tiling_for(4, 16) == Tiling(regions=4, rows=4, chunks=1, key_rows=4, slots=4)  # stage 3: 4 regions a tile
    assert tiling_for(81, 3) == Tiling(regions=1, rows=64, chunks=2, key_rows=64, slots=1)
    assert tiling_for(4, 1).block_n == 16  # at least 16 key columns even for one routed region
    for n, topk in [(1, 5), (2, 49), (6, 4), (4, 16), (16, 4), (64, 1), (100, 2)]:
        tiling = tiling_for(n, topk)
        assert tiling.block_m >= 16 and tiling.block_n >= 16
        assert tiling.regions * tiling.rows * tiling.chunks >= min(n, tiling.rows) * tiling.regions
    with pytest.raises(ValueError, match="power of two"):
        tiling_for(4, 16, regions_per_tile=3)
    with pytest.raises(ValueError, match="fewer than 16 rows"):
        tiling_for(4, 16, regions_per_tile=2)


def test_unique_and_transposed_routing_lists():
    index = torch.tensor([[[3, 1, 3], [0, 0, 0], [2, 1, 0], [1, 3, 2]], [[0, 1, 2], [3, 3, 1], [1, 1, 1], [2, 0, 3]]])
    routing = unique_routing(index)
    assert routing.dtype == torch.int32
    assert routing[0, 0].tolist() == [1, 3, -1] and routing[0, 1].tolist() == [0, -1, -1]
    starts, counts, choosers = transposed_routing(routing)
    for b in range(2):
        for key_region in range(4):
            i = b * 4 + key_region
            got = choosers[starts[i] : starts[i] + counts[i]].tolist()
            expected = [r for r in range(4) if key_region in index[b, r].tolist()]
            assert got == expected, (b, key_region)
    assert int(counts.sum()) == choosers.numel() == int((routing >= 0).sum())


def test_auto_never_picks_triton_on_cpu_and_on_cuda_only_where_measured(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # even where the interpreter would run it
    shapes = [(56, 56, 7, 1), (28, 28, 7, 4), (14, 14, 7, 16)]
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for (h, w, n_win, topk), needs_grad in [(s, g) for s in shapes for g in (False, True)]:
            for device in ("cpu", "cuda"):  # the stored measurements have no triton entry yet
                choice = explain_request(device, dtype, h, w, n_win=n_win, topk=topk, needs_grad=needs_grad)
                assert choice.backend != "triton"
            choice = explain_request("cpu", dtype, h, w, n_win=n_win, topk=topk, needs_grad=needs_grad)
            assert choice.excluded["triton"] == "auto picks it only on cuda"
    # Measurements in which triton beats everything: picked on CUDA (where importable), still never on CPU.
    times = {name: 10.0 for name in BACKENDS} | {"triton": 0.01}
    runs = [
        {"source": "test", "device": device, "dtype": "bfloat16", "shapes": [{
            "label": "fake", "batch": 64, "height": 28, "width": 28, "n_win": 7, "topk": 4, "num_heads": 4,
            "tokens": 784, "tokens_per_region": 16, "forward_ms": times, "train_ms": times}]}
        for device in ("cpu", "cuda")
    ]  # fmt: skip
    cuda = explain_request("cuda", torch.bfloat16, 28, 28, n_win=7, topk=4, needs_grad=True, runs=runs)
    assert (cuda.backend == "triton") == HAVE_TRITON, cuda
    cpu = explain_request("cpu", torch.bfloat16, 28, 28, n_win=7, topk=4, needs_grad=True, runs=runs)
    assert cpu.backend != "triton" and "triton" in cpu.excluded


def test_clear_errors_where_triton_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_backend, "_loaded_kernels", lambda: None)
    if HAVE_TRITON:
        assert "set TRITON_INTERPRET=1" in triton_backend.triton_problem("cpu")
        assert triton_backend.triton_problem("cuda") is None
        compiled = type("Compiled", (), {"INTERPRETED": False})
        monkeypatch.setattr(triton_backend, "_loaded_kernels", lambda: compiled)
        assert "compiled for the GPU in this process" in triton_backend.triton_problem("cpu")
    assert "not mps" in triton_backend.triton_problem("mps")
    q = torch.randn(1, 14, 14, 8)
    with pytest.raises(RuntimeError, match="backend 'triton' cannot run this request: .*Use 'lean'"):
        bra(q, q, q, num_heads=2, n_win=7, topk=2, backend="triton")
    real_import = triton_backend.importlib.import_module

    def no_triton(name, *args):
        if name == "triton":
            raise ImportError("No module named 'triton'")
        return real_import(name, *args)

    monkeypatch.setattr(triton_backend.importlib, "import_module", no_triton)
    assert "needs the 'triton' package" in BACKENDS["triton"].problem("cuda", torch.bfloat16, needs_grad=True)


@needs_triton
def test_interpreter_after_triton_language_was_imported():
    """torch.compile imports triton.language before a notebook sets TRITON_INTERPRET: the kernels still run."""
    code = (
        "import os, torch, triton.language\n"  # decorated for compilation: tl.max, tl.sum, tl.zeros are jit functions
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "from bralib.ops import route_regions\n"
        "from bralib.ops.backends import BACKENDS\n"
        "q = torch.randn(1, 14, 14, 16)\n"
        "index = route_regions(q, q, n_win=7, topk=4)[1]\n"
        "kw = dict(num_heads=1, n_win=7, scale=0.25)\n"
        "got, want = (BACKENDS[name].fn(q, q, q, index, **kw) for name in ('triton', 'reference'))\n"
        "print(float((got - want).abs().max()))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 1e-5


AHEAD_OF_TIME = """
import inspect, re, sys
import triton
from triton.backends.compiler import GPUTarget
from bralib.ops.backends.triton import tiling_for
from bralib.ops.kernels import routed_attention as kernels

pointers = {"Lse": "*fp32", "Delta": "*fp32", "Index": "*i32", "Starts": "*i32", "Counts": "*i32", "Choosers": "*i32"}
pointers |= {name: "*bf16" for name in ("Q", "K", "V", "Out", "dO", "dQ", "dK", "dV")}
for tokens, topk in [(64, 1), (16, 4), (4, 16)]:  # BiFormer's three stages
    t = tiling_for(tokens, topk)
    constants = dict(D=32, DV=32, D_PAD=32, DV_PAD=32, G=t.regions, ROWS=t.rows, KEY_ROWS=t.key_rows, SLOTS=t.slots,
                     PRECISION="tf32", WIDEN=False)
    for fn in (kernels._fwd_kernel, kernels._dq_kernel, kernels._dkv_kernel):
        names = inspect.signature(fn.fn).parameters
        signature = {n: "constexpr" if n in constants else pointers.get(n, "fp32" if n.startswith("scale") else "i32")
                     for n in names}
        compiled = triton.compile(triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants),
                                  target=GPUTarget("cuda", 90, 32))
        print(fn.__name__, tokens, len(re.findall("mma", compiled.asm["ptx"])))
"""


@needs_triton
def test_kernels_compile_for_an_h100_without_one():
    """Triton compiles the kernels to sm_90 code on a CPU (bfloat16, BiFormer's tilings), with tensor-core MMAs."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)  # compiled kernels in this subprocess
    result = subprocess.run([sys.executable, "-c", AHEAD_OF_TIME], capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0 and ("ptxas" in result.stderr or "ImportError" in result.stderr):
        pytest.skip(f"no ahead-of-time CUDA compilation here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 9 and all(int(mma) > 0 for _, _, mma in lines), result.stdout


def test_bralib_works_without_triton():
    """A process in which triton cannot be imported: bralib imports, other backends run, triton says why not."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, bralib\n"
        "from bralib.ops import bra\n"
        "from bralib.ops.backends import BACKENDS\n"
        "q = torch.randn(1, 14, 14, 8, requires_grad=True)\n"
        "bra(q, q, q, num_heads=2, n_win=7, topk=2, backend='lean').sum().backward()\n"
        "bra(q, q, q, num_heads=2, n_win=7, topk=2).sum().backward()\n"
        "print(BACKENDS['triton'].problem('cuda', torch.float16, needs_grad=True))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "needs the 'triton' package" in result.stdout
