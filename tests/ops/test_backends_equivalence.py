"""Every BRA backend against "reference": outputs and q/k/v gradients, float64 and float32, CPU and CUDA.

The core reference-vs-gather tests live in test_bra.py; here every other backend is held to the same
standard on odd shapes (H != W, Cqk != Cv, n_win 1, 2, 3, 7, topk from 1 to S*S), and the properties that
make the fast backends what they are get their own tests: lean keeps O(HW*C) for the backward, flex
refuses a CPU backward with a clear error.
"""

from __future__ import annotations

import pytest
import torch

from bralib.bench.measure import saved_bytes
from bralib.ops import bra, route_regions
from bralib.ops.backends import BACKENDS
from bralib.ops.backends.flex import flex_attention_backend, flex_request_problem
from bralib.ops.backends.lean import flash_applies, lean_attention

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")),
]
# (B, H, W, Cqk, Cv, heads, n_win, topk)
SHAPES = [
    (2, 6, 9, 8, 4, 2, 3, 2),  # H != W, Cqk != Cv, n_win 3
    (1, 14, 14, 16, 16, 2, 7, 49),  # k = S*S: full attention
    (2, 8, 8, 8, 8, 1, 1, 1),  # n_win 1: one region
    (2, 12, 8, 12, 6, 3, 2, 3),  # n_win 2, Cv < Cqk, 3 heads
    (1, 4, 6, 4, 4, 1, 2, 4),  # n_win 2, k = S*S, 2x3-token regions
    (1, 21, 14, 8, 16, 2, 7, 5),  # n_win 7, H != W, Cv > Cqk
    (2, 14, 14, 16, 16, 2, 7, 1),  # BiFormer's stage-1 routing (k = 1)
]
TOLERANCES = {torch.float64: 1e-10, torch.float32: 2e-5}
# triton has its own module (test_backends_triton.py: interpreter rows on CPU, compiled rows on CUDA).
TRAINABLE = [name for name in BACKENDS if name not in ("reference", "flex", "triton")]


def random_problem(shape, dtype, device, seed=0):
    batch, height, width, c_qk, c_v, heads, n_win, topk = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, height, width, c_qk, generator=gen, dtype=dtype)
    k = torch.randn(batch, height, width, c_qk, generator=gen, dtype=dtype)
    v = torch.randn(batch, height, width, c_v, generator=gen, dtype=dtype)
    grad_out = torch.randn(batch, height, width, c_v, generator=gen, dtype=dtype)
    q, k, v, grad_out = (t.to(device) for t in (q, k, v, grad_out))
    _, index = route_regions(q, k, n_win=n_win, topk=topk)
    return [t.requires_grad_() for t in (q, k, v)], index, grad_out, dict(num_heads=heads, n_win=n_win, scale=0.41)


def outputs_and_grads(fn, qkv, index, grad_out, kwargs):
    out = fn(*qkv, index, **kwargs)
    return (out, *torch.autograd.grad(out, qkv, grad_out))


def assert_close(got, expected, tol):
    for g, e, name in zip(got, expected, ("out", "dq", "dk", "dv"), strict=False):
        scale = e.abs().max().item() + 1e-30
        error = (g - e).abs().max().item() / scale
        assert error < tol, f"{name}: max error {error:.2e} (relative to max |ref|) exceeds {tol:.0e}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", TRAINABLE)
def test_backend_matches_reference_with_gradients(backend, shape, dtype, device):
    qkv, index, grad_out, kwargs = random_problem(shape, dtype, device)
    expected = outputs_and_grads(BACKENDS["reference"].fn, qkv, index, grad_out, kwargs)
    got = outputs_and_grads(BACKENDS[backend].fn, qkv, index, grad_out, kwargs)
    assert_close(got, expected, TOLERANCES[dtype])


@pytest.mark.parametrize("strategy", ["flash", "recompute"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_lean_strategies_match_reference(strategy, shape):
    """Both ways lean computes a chunk are right; 'flash' only applies where q and v heads are equally wide."""
    qkv, index, grad_out, kwargs = random_problem(shape, torch.float64, "cpu", seed=1)
    if strategy == "flash" and not flash_applies(qkv[0], qkv[2], kwargs["num_heads"]):
        with pytest.raises(ValueError, match="strategy='flash' needs"):
            lean_attention(*qkv, index, strategy="flash", **kwargs)
        return
    expected = outputs_and_grads(BACKENDS["reference"].fn, qkv, index, grad_out, kwargs)
    got = outputs_and_grads(lambda *a, **kw: lean_attention(*a, strategy=strategy, **kw), qkv, index, grad_out, kwargs)
    assert_close(got, expected, TOLERANCES[torch.float64])


@pytest.mark.parametrize("strategy", ["flash", "recompute"])
def test_lean_chunks_give_the_same_answer(strategy, monkeypatch):
    """Chunking must not change anything: force one region ("flash") or one image ("recompute") per chunk."""
    import bralib.ops.backends.lean as lean

    qkv, index, grad_out, kwargs = random_problem((3, 14, 14, 8, 8, 2, 7, 4), torch.float64, "cpu", seed=2)

    def run(*args, **kw):
        return lean_attention(*args, strategy=strategy, **kw)

    whole = outputs_and_grads(run, qkv, index, grad_out, kwargs)
    monkeypatch.setattr(lean, "CPU_CHUNK_BYTES", 1)
    monkeypatch.setattr(lean, "CPU_REGION_CHUNK_BYTES", 1)
    assert lean.chunk_images(qkv[0], qkv[2], 4, 7) == 1
    assert lean.regions_per_chunk(qkv[0], qkv[2], 4, 7) == 1
    chunked = outputs_and_grads(run, qkv, index, grad_out, kwargs)
    assert_close(chunked, whole, 1e-12)
    monkeypatch.setattr(lean, "CPU_REGION_CHUNK_BYTES", 5 * 4 * 4 * 16 * 8)  # 5 regions: the last chunk is short
    assert lean.regions_per_chunk(qkv[0], qkv[2], 4, 7) == 5
    assert_close(outputs_and_grads(run, qkv, index, grad_out, kwargs), whole, 1e-12)


def test_lean_gradients_land_in_contiguous_buffers_for_strided_inputs():
    """q, k, v as channel slices of one qkv tensor (as in the layer) and as a permuted view: gradients still right."""
    gen = torch.Generator().manual_seed(7)
    qkv = torch.randn(2, 14, 14, 3 * 8, generator=gen, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.split(8, dim=-1)  # row stride 24: not contiguous
    index = route_regions(q.detach(), k.detach(), n_win=7, topk=3)[1]
    grad_out = torch.randn(2, 14, 14, 8, generator=gen, dtype=torch.float64)
    kwargs = dict(num_heads=2, n_win=7, scale=0.3)
    expected = outputs_and_grads(BACKENDS["reference"].fn, [q, k, v], index, grad_out, kwargs)
    got = outputs_and_grads(BACKENDS["lean"].fn, [q, k, v], index, grad_out, kwargs)
    assert_close(got, expected, 1e-10)
    channels_first = torch.randn(2, 8, 14, 14, generator=gen, dtype=torch.float64, requires_grad=True)
    permuted = channels_first.permute(0, 2, 3, 1)  # dense but not contiguous
    expected = outputs_and_grads(BACKENDS["reference"].fn, [permuted] * 3, index, grad_out, kwargs)
    got = outputs_and_grads(BACKENDS["lean"].fn, [permuted] * 3, index, grad_out, kwargs)
    assert_close(got, expected, 1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", [*TRAINABLE, "triton"])
def test_half_precision_backends_on_cuda(backend, dtype):
    """fp16/bf16 on CUDA (dense's boolean mask, lean's recompute path, triton compiled) vs float32 reference."""
    if BACKENDS[backend].problem("cuda", dtype, needs_grad=True) is not None:
        pytest.skip(BACKENDS[backend].problem("cuda", dtype, needs_grad=True))
    qkv, index, grad_out, kwargs = random_problem((2, 28, 28, 64, 64, 2, 7, 4), torch.float32, "cuda", seed=8)
    expected = outputs_and_grads(BACKENDS["reference"].fn, qkv, index, grad_out, kwargs)
    half = [t.detach().to(dtype).requires_grad_() for t in qkv]
    got = outputs_and_grads(BACKENDS[backend].fn, half, index, grad_out.to(dtype), kwargs)
    assert all(g.dtype == dtype for g in got)
    assert_close([g.float() for g in got], expected, 3e-2 if dtype == torch.bfloat16 else 5e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_backends_agree_on_float32_bra_calls(device):
    """Through the public bra(): same routing, every backend that can run gives the reference's answer."""
    qkv, index, _, kwargs = random_problem((2, 14, 21, 16, 16, 4, 7, 3), torch.float32, device, seed=3)
    with torch.no_grad():
        expected = bra(*qkv, num_heads=4, n_win=7, topk=3, routing_index=index, backend="reference")
        for name, backend in BACKENDS.items():
            if name == "flex" or backend.problem(device, torch.float32, needs_grad=False):
                continue
            got = bra(*qkv, num_heads=4, n_win=7, topk=3, routing_index=index, backend=name)
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4, msg=f"backend {name}")


# ---------------------------------------------------------------- flex (compiled: a few shapes only)

FLEX_SHAPES = [(2, 6, 9, 8, 4, 2, 3, 2), (1, 28, 28, 16, 16, 2, 7, 4)]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,block_size",
    [(FLEX_SHAPES[0], None), (FLEX_SHAPES[1], None), (FLEX_SHAPES[0], 16), (FLEX_SHAPES[1], 128)],
    ids=["region-blocks-3x3", "region-blocks-7x7", "grouped-16", "grouped-128"],
)
def test_flex_forward_matches_reference(shape, block_size, device):
    """One block per region, and regions grouped into larger blocks (the CUDA path for small regions)."""
    qkv, index, _, kwargs = random_problem(shape, torch.float32, device, seed=4)
    with torch.no_grad():
        expected = BACKENDS["reference"].fn(*qkv, index, **kwargs)
        got = flex_attention_backend(*qkv, index, block_size=block_size, **kwargs)
    assert_close((got,), (expected,), TOLERANCES[torch.float32])


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: FlexAttention backward exists only there")
def test_flex_gradients_match_reference_on_cuda():
    qkv, index, grad_out, kwargs = random_problem(FLEX_SHAPES[1], torch.float32, "cuda", seed=5)
    expected = outputs_and_grads(BACKENDS["reference"].fn, qkv, index, grad_out, kwargs)
    got = outputs_and_grads(BACKENDS["flex"].fn, qkv, index, grad_out, kwargs)
    assert_close(got, expected, TOLERANCES[torch.float32])


def test_flex_cpu_backward_is_a_clear_error_naming_the_alternatives():
    qkv, index, _, kwargs = random_problem(FLEX_SHAPES[0], torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="no CPU backward") as err:
        bra(*qkv, num_heads=2, n_win=3, topk=2, routing_index=index, backend="flex")
    for alternative in ("'lean'", "'sdpa'", "'dense'", "'auto'"):
        assert alternative in str(err.value)
    with pytest.raises(RuntimeError, match="supports float16, bfloat16, float32, not float64"):
        with torch.no_grad():
            flex_attention_backend(*(t.double() for t in qkv), index, **kwargs)


def test_backend_capabilities_agree_with_flex_itself():
    for device in ("cpu", "cuda", "mps"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            for needs_grad in (False, True):
                declared = BACKENDS["flex"].problem(device, dtype, needs_grad) is None
                actual = flex_request_problem(device, dtype, needs_grad) is None
                assert declared == actual, (device, dtype, needs_grad)


# ---------------------------------------------------------------- lean keeps O(HW*C) for the backward


def lean_and_gather_saved(topk):
    qkv, index, _, kwargs = random_problem((2, 14, 14, 16, 16, 2, 7, topk), torch.float32, "cpu", seed=6)
    counts = {}
    for name in ("lean", "gather"):
        counts[name], out = saved_bytes(lambda name=name: BACKENDS[name].fn(*qkv, index, **kwargs), exclude=qkv)
        del out
    return counts, qkv[2].numel() * qkv[2].element_size()


def test_lean_saved_activations_do_not_grow_with_topk():
    """Beyond its inputs, lean saves the output, one log-sum-exp per query and head, and the routing index."""
    few, out_bytes = lean_and_gather_saved(topk=1)
    many, _ = lean_and_gather_saved(topk=49)
    index_growth = 2 * 49 * (49 - 1) * 8  # only the (B, S*S, topk) int64 index grows with k
    assert many["lean"] - few["lean"] == index_growth
    assert many["lean"] <= out_bytes * 1.2 + index_growth  # the output (HW*Cv) plus the small statistics
    assert many["gather"] >= 49 * out_bytes  # the gather keeps k copies of K and V (and the attention matrix)
    assert many["lean"] * 10 < many["gather"] and few["lean"] < few["gather"]


def test_lean_compiles_and_runs_forward_and_backward():
    from bralib.ops import BiLevelRoutingAttention

    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(16, 2, n_win=7, topk=4, backend="lean")
    x = torch.randn(2, 14, 14, 16, requires_grad=True)
    eager = layer(x)
    (grad_eager,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(layer)(x)
    (grad_compiled,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad_compiled, grad_eager, atol=1e-5, rtol=1e-4)
