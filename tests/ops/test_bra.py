"""Core BRA: regions, routing, reference vs gather, gradients, errors, padding, compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bralib.ops import (
    BiLevelRoutingAttention,
    bra,
    from_regions,
    local_index,
    region_of_tokens,
    route_regions,
    to_regions,
)


def random_qkv(batch, height, width, c_qk, c_v, dtype=torch.float32, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, height, width, c_qk, generator=gen, dtype=dtype)
    k = torch.randn(batch, height, width, c_qk, generator=gen, dtype=dtype)
    v = torch.randn(batch, height, width, c_v, generator=gen, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


# ---------------------------------------------------------------- regions


def test_to_regions_round_trip_and_row_major_numbering():
    x = torch.arange(6 * 8).reshape(1, 6, 8, 1).float()
    regions = to_regions(x, 2)  # (1, 4, 12, 1)
    assert regions.shape == (1, 4, 12, 1)
    # Region 1 is the top-right block: rows 0-2, columns 4-7, tokens row-major inside.
    expected = torch.tensor([[r * 8 + c for c in range(4, 8)] for r in range(3)]).flatten().float()
    assert torch.equal(regions[0, 1, :, 0], expected)
    assert torch.equal(from_regions(regions, 2, 6, 8), x)
    assert torch.equal(region_of_tokens(6, 8, 2).reshape(6, 8)[:, 4:].unique(), torch.tensor([1, 3]))


# ---------------------------------------------------------------- routing


def test_route_regions_matches_the_definition_and_is_sorted():
    q, k, _ = random_qkv(2, 8, 12, 6, 6)
    logits, index = route_regions(q, k, n_win=4, topk=5)
    q_r = to_regions(q, 4).mean(2)
    k_r = to_regions(k, 4).mean(2)
    expected = q_r @ k_r.transpose(1, 2) * 6**-0.5
    torch.testing.assert_close(logits, expected)
    assert index.shape == (2, 16, 5)
    picked = logits.gather(-1, index)
    assert (picked[..., :-1] >= picked[..., 1:]).all(), "index must be sorted by descending score"
    # Nothing outside the top-k scores higher than the k-th pick.
    assert (logits.topk(5, dim=-1).values[..., -1] == picked[..., -1]).all()


def test_routing_uses_float32_under_bfloat16_autocast():
    q, k, _ = random_qkv(2, 14, 14, 32, 32, seed=3)
    _, index32 = route_regions(q, k, n_win=7, topk=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, index_amp = route_regions(q, k, n_win=7, topk=4)
    assert logits.dtype == torch.float32
    assert torch.equal(index32, index_amp)


def test_local_index_is_nearest_regions_itself_first():
    index = local_index(5, 9)  # (25, 9)
    centre = 2 * 5 + 2
    assert index[centre, 0] == centre
    assert sorted(index[centre].tolist()) == [6, 7, 8, 11, 12, 13, 16, 17, 18]  # its 3x3 neighbourhood
    assert (index[:, 0] == torch.arange(25)).all()


# ---------------------------------------------------------------- backends agree

shapes = st.fixed_dictionaries(
    {
        "batch": st.integers(1, 3),
        "n_win": st.integers(1, 4),
        "cells_h": st.integers(1, 3),
        "cells_w": st.integers(1, 3),
        "heads": st.sampled_from([1, 2, 4]),
        "head_qk": st.sampled_from([2, 4, 8]),
        "head_v": st.sampled_from([2, 3, 8]),
        "topk_frac": st.floats(0.0, 1.0),
        "seed": st.integers(0, 2**16),
    }
)


def unpack(shape):
    n_win, heads = shape["n_win"], shape["heads"]
    height, width = n_win * shape["cells_h"], n_win * shape["cells_w"]
    topk = max(1, round(shape["topk_frac"] * n_win * n_win))
    return n_win, heads, height, width, topk


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from([(torch.float32, 1e-5), (torch.float64, 1e-10)]))
def test_gather_equals_reference_on_random_shapes(shape, dtype_tol):
    dtype, tol = dtype_tol
    n_win, heads, height, width, topk = unpack(shape)
    q, k, v = random_qkv(
        shape["batch"], height, width, heads * shape["head_qk"], heads * shape["head_v"], dtype, shape["seed"]
    )
    args = dict(num_heads=heads, n_win=n_win, topk=topk)
    ref = bra(q, k, v, backend="reference", **args)
    out = bra(q, k, v, backend="gather", **args)
    assert out.shape == v.shape and out.dtype == dtype
    assert (out - ref).abs().max().item() < tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_gradients_of_q_k_v_agree(dtype, tol):
    grads = {}
    for backend in ("reference", "gather"):
        q, k, v = random_qkv(2, 8, 12, 16, 12, dtype, seed=7, requires_grad=True)
        out = bra(q, k, v, num_heads=4, n_win=4, topk=3, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape)).sum().backward()
        grads[backend] = (q.grad, k.grad, v.grad)
    for name, g_ref, g_gather in zip("qkv", grads["reference"], grads["gather"], strict=True):
        assert (g_ref - g_gather).abs().max().item() < tol, name


@pytest.mark.parametrize("backend", ["reference", "gather"])
def test_topk_all_regions_is_full_attention(backend):
    q, k, v = random_qkv(2, 12, 8, 16, 24, torch.float64, seed=1)
    out = bra(q, k, v, num_heads=4, n_win=4, topk=16, backend=backend)
    heads = [t.reshape(2, 96, 4, -1).transpose(1, 2) for t in (q, k, v)]
    full = F.scaled_dot_product_attention(*heads).transpose(1, 2).reshape(2, 12, 8, 24)
    assert (out - full).abs().max().item() < 1e-12


@pytest.mark.parametrize("backend", ["reference", "gather"])
def test_gradcheck_float64(backend):
    q, k, v = random_qkv(1, 4, 6, 4, 4, torch.float64, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: bra(q, k, v, num_heads=2, n_win=2, topk=2, backend=backend), (q, k, v)
    )


def test_local_routing_differs_from_content_routing_and_uses_local_index():
    q, k, v = random_qkv(1, 8, 8, 8, 8, seed=4)
    _, index = bra(q, k, v, num_heads=2, n_win=4, topk=3, routing="local", return_routing=True)
    assert torch.equal(index[0], local_index(4, 3))


# ---------------------------------------------------------------- the module


def test_module_paper_and_official_scales():
    paper = BiLevelRoutingAttention(64, 4, n_win=2, topk=1)
    official = BiLevelRoutingAttention(64, 4, n_win=2, topk=1, scale_mode="official")
    assert paper.scale == pytest.approx(16**-0.5)
    assert official.scale == pytest.approx(64**-0.5)


def test_module_matches_functional_composition():
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, 2, n_win=4, topk=2, side_dwconv=5).double()
    x = torch.randn(2, 8, 8, 32, dtype=torch.float64)
    q, k, v = layer.qkv(x).split([32, 32, 32], dim=-1)
    attn = bra(q, k, v, num_heads=2, n_win=4, topk=2, backend="reference")
    lce = layer.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    expected = layer.proj(attn + lce)
    assert (layer(x) - expected).abs().max().item() < 1e-12


def test_auto_pad_rule_equals_explicit_zero_padding_then_crop():
    """The rule: auto_pad gives the output of the released code, i.e. of running on the zero-padded input."""
    torch.manual_seed(0)
    padded = BiLevelRoutingAttention(16, 2, n_win=4, topk=3, auto_pad=True).double()
    plain = BiLevelRoutingAttention(16, 2, n_win=4, topk=3).double()
    plain.load_state_dict(padded.state_dict())
    x = torch.randn(2, 10, 13, 16, dtype=torch.float64)
    out = padded(x)
    assert out.shape == x.shape
    expected = plain(F.pad(x, (0, 0, 0, 3, 0, 2)))[:, :10, :13]
    assert (out - expected).abs().max().item() < 1e-12
    # On sizes that need no padding, auto_pad changes nothing.
    y = torch.randn(1, 12, 8, 16, dtype=torch.float64)
    assert torch.equal(padded(y), plain(y))


def test_module_backward_reaches_every_parameter():
    layer = BiLevelRoutingAttention(16, 2, n_win=2, topk=2)
    layer(torch.randn(2, 4, 6, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_bfloat16_autocast_runs_and_keeps_routing():
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, 2, n_win=4, topk=2)
    x = torch.randn(2, 8, 8, 32)
    _, index = layer(x, return_routing=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, index_amp = layer(x, return_routing=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert torch.equal(index, index_amp)


def test_gather_backend_compiles_without_graph_breaks():
    layer = BiLevelRoutingAttention(16, 2, n_win=2, topk=2, backend="gather")
    x = torch.randn(2, 4, 4, 16)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), layer(x))
    fn = torch.compile(lambda q, k, v: bra(q, k, v, num_heads=2, n_win=2, topk=2, backend="gather"), fullgraph=True)
    q, k, v = random_qkv(1, 4, 4, 8, 8)
    torch.testing.assert_close(fn(q, k, v), bra(q, k, v, num_heads=2, n_win=2, topk=2, backend="gather"))
    # Forget the compiled frames: BiLevelRoutingAttention.forward compiled again at another shape (as in
    # tests/ops/test_backends_equivalence.py) would be recompiled with dynamic shapes, where inductor fails
    # for the sdpa and lean backends (torch 2.13), whatever this test did.
    torch._dynamo.reset()


# ---------------------------------------------------------------- errors name the argument and what is allowed


def qkv_for_errors():
    return random_qkv(1, 8, 8, 8, 8)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(topk=0), r"topk must be an integer in \[1, n_win\*\*2\] = \[1, 16\]"),
        (dict(topk=17), r"topk must be an integer in \[1, n_win\*\*2\] = \[1, 16\].*got 17"),
        (dict(n_win=3), r"H=8 is not divisible by n_win=3.*multiples of 3"),
        (dict(num_heads=3), r"Cqk \(q.shape\[-1\]\)=8 is not divisible by num_heads=3"),
        (dict(n_win=0), r"n_win must be a positive integer, got 0"),
        (dict(backend="fast"), r"backend must be one of \['auto', 'reference', 'gather'.*got 'fast'"),
        (dict(routing="random"), r"routing must be one of \('content', 'local'\), got 'random'"),
    ],
)
def test_bra_argument_errors(kwargs, message):
    q, k, v = qkv_for_errors()
    args = dict(num_heads=2, n_win=4, topk=2) | kwargs
    with pytest.raises(ValueError, match=message):
        bra(q, k, v, **args)


def test_bra_shape_errors():
    q, k, v = qkv_for_errors()
    with pytest.raises(ValueError, match=r"q must have 4 dimensions \(B, H, W, C\), got shape \(8, 8, 8\)"):
        bra(q[0], k, v, num_heads=2, n_win=4, topk=2)
    with pytest.raises(ValueError, match=r"q and k must have the same shape"):
        bra(q, k[..., :4], v, num_heads=2, n_win=4, topk=2)
    with pytest.raises(ValueError, match=r"v must share \(B, H, W\) with q"):
        bra(q, k, v[:, :4], num_heads=2, n_win=4, topk=2)
    with pytest.raises(ValueError, match=r"Cv \(v.shape\[-1\]\)=6 is not divisible by num_heads=4"):
        bra(q, k, v[..., :6], num_heads=4, n_win=4, topk=2)
    with pytest.raises(ValueError, match=r"must share a dtype"):
        bra(q, k, v.double(), num_heads=2, n_win=4, topk=2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(dim=30, num_heads=4), r"dim=30 is not divisible by num_heads=4"),
        (dict(dim=32, num_heads=4, qk_dim=30), r"qk_dim=30 is not divisible by num_heads=4"),
        (dict(dim=32, num_heads=4, topk=50), r"topk must be an integer in \[1, n_win\*\*2\] = \[1, 49\]"),
        (dict(dim=32, num_heads=4, side_dwconv=4), r"side_dwconv must be 0 \(no LCE\) or an odd kernel size, got 4"),
        (dict(dim=32, num_heads=4, scale_mode="mine"), r"scale_mode must be one of \('paper', 'official'\)"),
        (dict(dim=32, num_heads=0), r"num_heads must be a positive integer, got 0"),
    ],
)
def test_module_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BiLevelRoutingAttention(**kwargs)


def test_module_forward_errors():
    layer = BiLevelRoutingAttention(16, 2, n_win=4, topk=2)
    with pytest.raises(ValueError, match=r"x has 8 channels \(last dim\), but this layer was built for dim=16"):
        layer(torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"x must have 4 dimensions"):
        layer(torch.randn(8, 8, 16))
    with pytest.raises(ValueError, match=r"W=10 is not divisible by n_win=4.*auto_pad=True"):
        layer(torch.randn(1, 8, 10, 16))


def test_region_errors():
    with pytest.raises(ValueError, match=r"regions has shape \(1, 4, 12, 1\), but n_win=2 with height=6, width=6"):
        from_regions(torch.zeros(1, 4, 12, 1), 2, 6, 6)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        to_regions([[1.0]], 2)


def test_module_routes_from_projected_region_means_like_route_regions():
    """mean(W x + b) = W mean(x) + b: routing from region means of x equals routing from q and k."""
    torch.manual_seed(5)
    layer = BiLevelRoutingAttention(16, 2, n_win=4, topk=3).double()
    x = torch.randn(2, 8, 12, 16, dtype=torch.float64)
    q, k, _ = layer.qkv(x).split([16, 16, 16], dim=-1)
    logits, expected = route_regions(q, k, n_win=4, topk=3)
    assert torch.equal(layer.route(x), expected)
    _, index = layer(x, return_routing=True)
    assert torch.equal(index, expected)


def test_routing_index_argument_is_checked():
    q, k, v = qkv_for_errors()
    with pytest.raises(ValueError, match=r"routing_index must be a long tensor of shape \(B, n_win\*\*2, topk\)"):
        bra(q, k, v, num_heads=2, n_win=4, topk=2, routing_index=torch.zeros(1, 16, 3, dtype=torch.long))
