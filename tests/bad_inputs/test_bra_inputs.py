"""Bad input to bra(), BiLevelRoutingAttention and explain_backend: a clear message, or the safe result.

Every backend must treat a request alike, since backend="auto" switches between them: the same refusals, the
same empty output for an empty batch, and NaN in exactly the same places (bralib.ops.nonfinite's rule).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bralib.ops import BACKENDS, BiLevelRoutingAttention, bra, explain_backend, route_regions
from bralib.ops.backends.flex import flex_attention_backend
from bralib.ops.masks import routed_mask

EAGER = [name for name in ("reference", "gather", "sdpa", "dense", "lean") if name in BACKENDS]
TRAINABLE = [name for name in EAGER if name != "reference"] + ["reference"]
ARGS = dict(num_heads=2, n_win=4, topk=2)  # 8x8 maps: 16 regions of 4 tokens


def qkv(batch=1, height=8, width=8, c_qk=8, c_v=8, dtype=torch.float32, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(batch, height, width, c) for c in (c_qk, c_qk, c_v)]
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


def index_with(value, position=(0, 0, 0)):
    """A valid routing index for the 8x8 maps above, with one entry replaced."""
    index = torch.stack([torch.arange(16), (torch.arange(16) + 1) % 16], dim=-1)[None].clone()  # (1, 16, 2)
    index[position] = value
    return index


# ---------------------------------------------------------------- the routing index: one message on every backend


@pytest.mark.parametrize("backend", [*EAGER, "flex"])
@pytest.mark.parametrize("value", [-1, 16, -17])
def test_an_index_outside_the_regions_is_refused_by_every_backend(backend, value):
    q, k, v = qkv()
    message = rf"routing_index holds region numbers in \[0, n_win\*\*2\) = \[0, 16\) \(n_win=4\); got {value} at"
    with pytest.raises(ValueError, match=message):
        bra(q, k, v, **ARGS, backend=backend, routing_index=index_with(value))


@pytest.mark.parametrize(
    "index,error,message",
    [
        (
            index_with(0).int(),
            ValueError,
            r"routing_index must be a long \(int64\) tensor .* got torch.int32; .*long\(\)",
        ),
        (index_with(0).float(), ValueError, r"routing_index must be a long \(int64\) tensor .* got torch.float32"),
        (torch.zeros(1, 16, 3, dtype=torch.long), ValueError, r"shape \(B, n_win\*\*2, topk\) = \(1, 16, 2\), got"),
        (torch.zeros(2, 16, 2, dtype=torch.long), ValueError, r"= \(1, 16, 2\), got torch.int64 \(2, 16, 2\)"),
        (torch.zeros(16, 2, dtype=torch.long), ValueError, r"= \(1, 16, 2\), got torch.int64 \(16, 2\)"),
        ([[0, 1]] * 16, TypeError, r"routing_index must be a torch.Tensor of shape .* got list"),
        (index_with(0).to("meta"), ValueError, r"routing_index is on meta but q is on cpu: they must be on one device"),
        (index_with(1, (0, 0, 0)), ValueError, r"rows must list 2 distinct regions; row \[0, 0\] is \[1, 1\]"),
    ],
    ids=["int32", "float", "topk-3", "batch-2", "rank-2", "list", "other-device", "repeated-region"],
)
def test_a_malformed_index_is_refused(index, error, message):
    q, k, v = qkv()
    with pytest.raises(error, match=message):
        bra(q, k, v, **ARGS, routing_index=index)


def test_a_valid_index_is_used_as_given():
    q, k, v = qkv()
    _, used = bra(q, k, v, **ARGS, routing_index=index_with(5), return_routing=True)
    assert torch.equal(used, index_with(5))


# ---------------------------------------------------------------- shapes, dtypes and numbers


@pytest.mark.parametrize(
    "change,error,message",
    [
        (dict(q=torch.zeros(1, 0, 8, 8), k=torch.zeros(1, 0, 8, 8), v=torch.zeros(1, 0, 8, 8)), ValueError,
         r"empty map \(H=0, W=8\): H and W must be at least 1"),
        (dict(q=torch.zeros(1, 8, 8, 0), k=torch.zeros(1, 8, 8, 0)), ValueError,
         r"Cqk \(q.shape\[-1\]\)=0: there must be at least one channel per head"),
        (dict(v=torch.zeros(1, 8, 8, 0)), ValueError, r"Cv \(v.shape\[-1\]\)=0: there must be at least one channel"),
        (dict(num_heads=0), ValueError, r"num_heads must be a positive integer, got 0"),
        (dict(num_heads=3), ValueError, r"Cqk \(q.shape\[-1\]\)=8 is not divisible by num_heads=3"),
        (dict(num_heads=2.0), ValueError, r"num_heads must be a positive integer, got 2.0"),
        (dict(topk=0), ValueError, r"topk must be an integer in \[1, n_win\*\*2\] = \[1, 16\] for n_win=4, got 0"),
        (dict(topk=17), ValueError, r"topk must be an integer in \[1, n_win\*\*2\] = \[1, 16\].*got 17"),
        (dict(topk=True), ValueError, r"topk must be an integer .* got True"),
        (dict(topk=2.5), ValueError, r"topk must be an integer .* got 2.5"),
        (dict(n_win=3), ValueError, r"H=8 is not divisible by n_win=3: allowed sizes are multiples of 3"),
        (dict(n_win=0), ValueError, r"n_win must be a positive integer, got 0"),
        (dict(n_win=-4), ValueError, r"n_win must be a positive integer, got -4"),
        (dict(q=torch.zeros(1, 8, 8, 8, dtype=torch.long), k=torch.zeros(1, 8, 8, 8, dtype=torch.long),
              v=torch.zeros(1, 8, 8, 8, dtype=torch.long)), ValueError, r"must be floating-point .* torch.int64"),
        (dict(v=torch.zeros(1, 8, 8, 8, device="meta")), ValueError, r"must be on one device, got cpu, cpu, meta"),
        (dict(q=np.zeros((1, 8, 8, 8))), TypeError, r"q must be a torch.Tensor of shape \(B, H, W, C\), got ndarray"),
        (dict(scale=0.0), ValueError, r"scale must be a positive finite number \(or None for the default\), got 0.0"),
        (dict(scale=-1.0), ValueError, r"scale must be a positive finite number .* got -1.0"),
        (dict(scale=float("nan")), ValueError, r"scale must be a positive finite number .* got nan"),
        (dict(routing_scale=-0.5), ValueError, r"routing_scale must be a positive finite number .* got -0.5"),
        (dict(backend="fast"), ValueError, r"backend must be one of \['auto', 'reference', .*got 'fast'"),
        (dict(routing="random"), ValueError, r"routing must be one of \('content', 'local'\), got 'random'"),
    ],
    ids=["empty-map", "no-qk-channels", "no-v-channels", "zero-heads", "heads-not-dividing", "float-heads",
         "topk-0", "topk-17", "topk-bool", "topk-float", "n_win-not-dividing", "n_win-0", "n_win-negative",
         "integer-dtype", "other-device", "numpy-array", "scale-0", "scale-negative", "scale-nan",
         "routing_scale-negative", "unknown-backend", "unknown-routing"],
)  # fmt: skip
def test_bad_arguments_name_what_was_wrong_and_what_is_allowed(change, error, message):
    q, k, v = qkv()
    tensors = dict(q=q, k=k, v=v)
    tensors.update({name: change.pop(name) for name in ("q", "k", "v") if name in change})
    with pytest.raises(error, match=message):
        bra(tensors["q"], tensors["k"], tensors["v"], **(ARGS | change))


def test_numpy_integers_are_integers():
    q, k, v = qkv()
    out = bra(q, k, v, num_heads=np.int64(2), n_win=np.int64(4), topk=np.int64(2), backend="gather")
    torch.testing.assert_close(out, bra(q, k, v, **ARGS, backend="gather"))


# ---------------------------------------------------------------- an empty batch


@pytest.mark.parametrize("backend", [*EAGER, "auto"])
def test_an_empty_batch_gives_an_empty_output_and_gradients(backend):
    q, k, v = qkv(batch=0, c_v=6, requires_grad=True)
    out = bra(q, k, v, **ARGS, backend=backend)
    assert out.shape == (0, 8, 8, 6) and out.dtype == torch.float32
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape


def test_an_empty_batch_on_flex_needs_no_compilation():
    q, k, v = qkv(batch=0)
    with torch.no_grad():
        assert bra(q, k, v, **ARGS, backend="flex").shape == (0, 8, 8, 8)


def test_the_layer_takes_an_empty_batch():
    layer = BiLevelRoutingAttention(8, 2, n_win=4, topk=2)
    x = torch.randn(0, 8, 8, 8, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert out.shape == (0, 8, 8, 8) and x.grad.shape == x.shape


@pytest.mark.parametrize(
    "x,message",
    [
        (torch.zeros(1, 8, 8, 8, dtype=torch.int64), r"x must be a floating-point tensor .* got torch.int64"),
        (torch.zeros(1, 0, 8, 8), r"x has an empty map \(H=0, W=8\)"),
        (torch.zeros(1, 8, 8, 6), r"x has 6 channels \(last dim\), but this layer was built for dim=8"),
    ],
    ids=["integer", "empty", "channels"],
)
def test_the_layer_refuses_bad_maps(x, message):
    with pytest.raises(ValueError, match=message):
        BiLevelRoutingAttention(8, 2, n_win=4, topk=2)(x)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(dim=0, num_heads=1), r"dim must be a positive integer, got 0"),
        (dict(dim=8, num_heads=0), r"num_heads must be a positive integer, got 0"),
        (dict(dim=8, num_heads=2, side_dwconv=True), r"side_dwconv must be 0 \(no LCE\) or an odd kernel size"),
        (dict(dim=8, num_heads=2, side_dwconv=-3), r"side_dwconv must be 0 \(no LCE\) or an odd kernel size"),
        (dict(dim=8, num_heads=2, route_from="y"), r"route_from must be one of \('x', 'qk'\), got 'y'"),
    ],
)
def test_the_layer_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BiLevelRoutingAttention(**kwargs)


# ---------------------------------------------------------------- NaN and infinities: one rule, every backend


def expected_nan(q, k, v, index, num_heads=2):
    """The rule, from its definition: NaN at (query i, channel c) iff q_i is non-finite in c's head, or a token
    that i routes to has a non-finite key in c's head or a non-finite value in channel c."""
    batch, height, width, c_v = v.shape
    n = height * width

    def per_channel_of_heads(x):  # (B, N, C) -> (B, N, Cv): non-finite in the head of each output channel
        bad = ~torch.isfinite(x).reshape(batch, n, num_heads, -1)
        return bad.any(-1, keepdim=True).expand(-1, -1, -1, c_v // num_heads).reshape(batch, n, c_v)

    key_bad = per_channel_of_heads(k.reshape(batch, n, -1)) | ~torch.isfinite(v.reshape(batch, n, c_v))
    routed = routed_mask(index, height, width, ARGS["n_win"]).float()  # (B, N, N)
    reached = (routed @ key_bad.float()) > 0
    return (reached | per_channel_of_heads(q.reshape(batch, n, -1))).reshape(v.shape)


NONFINITE = [
    ("q", (0, 1, 2, 0), float("nan")),
    ("k", (0, 3, 5, 6), float("nan")),
    ("v", (0, 6, 1, 3), float("nan")),
    ("v", (1, 0, 7, 2), float("inf")),
    ("k", (1, 4, 4, 1), float("-inf")),
    ("q", (1, 7, 7, 5), float("inf")),
]


@pytest.mark.parametrize(
    "dtype,tol,c_v", [(torch.float64, 1e-10, 6), (torch.float32, 1e-5, 8)], ids=["float64-Cv6", "float32-Cv8"]
)
@pytest.mark.parametrize("which,where,value", NONFINITE, ids=[f"{w}-{v}" for w, _, v in NONFINITE])
def test_a_nonfinite_value_reaches_exactly_the_routed_queries_on_every_backend(which, where, value, dtype, tol, c_v):
    """Cv = Cqk matters: PyTorch's fused (flash) attention returns 0, not NaN, for a query whose logits are NaN."""
    q, k, v = qkv(batch=2, c_v=c_v, dtype=dtype, seed=3)
    regions = torch.arange(16)
    index = torch.stack([regions, (3 * regions + 1) % 16], dim=-1).expand(2, -1, -1)  # each region routed twice
    tensors = dict(q=q, k=k, v=v)
    clean = bra(q, k, v, **ARGS, routing_index=index, backend="reference")
    tensors[which] = tensors[which].clone()
    tensors[which][where] = value
    expected = expected_nan(*tensors.values(), index)
    assert 0 < expected.sum() < expected.numel() // 4, "the case should spoil some outputs, not all"
    for backend in EAGER:
        out = bra(*tensors.values(), **ARGS, routing_index=index, backend=backend)
        assert torch.equal(torch.isnan(out), expected), f"{backend}: NaN in the wrong places"
        assert torch.isfinite(out[~expected]).all(), f"{backend}: an infinity escaped the rule"
        # Everywhere else the spoiled token changed nothing: the same numbers as without it.
        torch.testing.assert_close(out[~expected], clean[~expected], atol=tol, rtol=tol, msg=backend)


@pytest.mark.parametrize("backend", EAGER)
def test_nan_everywhere_outside_the_routed_regions_changes_nothing(backend):
    q, k, v = qkv(dtype=torch.float64, seed=5)
    index = index_with(0)  # region 0 routes to regions 0 and 1; spoil every other region's keys and values
    spoiled_k, spoiled_v = k.clone(), v.clone()
    spoiled_k[:, 2:], spoiled_v[:, 2:] = float("nan"), float("inf")  # rows 2-7: regions 4-15
    spoiled_k[:, :2, 4:], spoiled_v[:, :2, 4:] = float("-inf"), float("nan")  # regions 2 and 3
    out = bra(q, spoiled_k, spoiled_v, **ARGS, routing_index=index, backend=backend)
    reference = bra(q, k, v, **ARGS, routing_index=index, backend="reference")
    region0 = (slice(None), slice(0, 2), slice(0, 2))
    torch.testing.assert_close(out[region0], reference[region0], atol=1e-12, rtol=1e-10)


def test_content_routing_sends_a_nan_key_to_every_region():
    """Documented: the region logits see region means, and torch.topk ranks NaN first."""
    q, k, v = qkv(seed=6)
    k = k.clone()
    k[0, 5, 5, 0] = float("nan")  # region 10
    _, index = bra(q, k, v, **ARGS, backend="gather", return_routing=True)
    assert (index == 10).any(-1).all(), "every region routes to the region of the NaN key"
    outs = {backend: bra(q, k, v, **ARGS, backend=backend) for backend in EAGER}
    for backend, out in outs.items():
        assert torch.equal(torch.isnan(out), torch.isnan(outs["reference"])), backend
        assert torch.isnan(out[..., :4]).all() and not torch.isnan(out[..., 4:]).any(), backend  # head 0 only


def test_the_layer_keeps_the_rule_when_it_routes_itself():
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(8, 2, n_win=4, topk=2, side_dwconv=0).double()
    x = torch.randn(1, 8, 8, 8, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")  # poisons the projections of one token, so its region's means
    outs = {}
    for backend in EAGER:
        layer.backend = backend
        outs[backend] = layer(x)
    for backend, out in outs.items():
        assert torch.equal(torch.isnan(out), torch.isnan(outs["reference"])), backend


@pytest.mark.slow
def test_flex_keeps_the_rule():
    """flex compiles for about a minute on a CPU (the first time): one case, its NaN pattern against the reference's."""
    q, k, v = qkv(batch=2, c_v=6, seed=3)
    index = route_regions(q, k, n_win=4, topk=2)[1]
    q, k, v = q.clone(), k.clone(), v.clone()
    q[0, 1, 2, 0], v[1, 6, 1, 3] = float("nan"), float("inf")
    with torch.no_grad():
        reference = bra(q, k, v, **ARGS, routing_index=index, backend="reference")
        out = bra(q, k, v, **ARGS, routing_index=index, backend="flex")
        # Blocks of 8 tokens hold two regions: partial blocks, whose masked-out keys must not leak a NaN either.
        # (Backend functions called directly: the query part of the rule is bra's, so these queries stay finite.)
        k[0, 5, 5, 1] = float("nan")
        q_finite = q.nan_to_num()
        grouped = flex_attention_backend(q_finite, k, v, index, num_heads=2, n_win=4, scale=0.5, block_size=8)
        grouped_reference = BACKENDS["reference"].fn(q_finite, k, v, index, num_heads=2, n_win=4, scale=0.5)
    assert torch.equal(torch.isnan(out), torch.isnan(reference))
    torch.testing.assert_close(out.nan_to_num(), reference.nan_to_num(), atol=2e-5, rtol=1e-4)
    assert torch.equal(torch.isnan(grouped), torch.isnan(grouped_reference))
    torch.testing.assert_close(grouped.nan_to_num(), grouped_reference.nan_to_num(), atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------- explain_backend takes bra's arguments


def test_explain_backend_takes_bras_arguments(capsys):
    q, k, v = qkv()
    short = explain_backend(q, v, n_win=4, topk=2, needs_grad=False, verbose=False)
    full = explain_backend(q, k, v, **ARGS, backend="auto", scale=0.5, routing="local", verbose=False)
    assert full.backend == short.backend
    named = explain_backend(q, k, v, **ARGS, backend="gather")
    assert named.backend == "gather" and "named -> 'gather'" in capsys.readouterr().out
    q64 = [t.double() for t in (q, k, v)]
    assert "cannot run this request" in str(explain_backend(*q64, **ARGS, backend="flex", verbose=False))


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda q, k, v: explain_backend(q, k, v, num_heads=3, n_win=4, topk=2), ValueError, "not divisible by num_"),
        (lambda q, k, v: explain_backend(q, k, v, num_heads=2, n_win=4, topk=99), ValueError, r"topk must be"),
        (lambda q, k, v: explain_backend(q, k, v, **ARGS, backend="fast"), ValueError, "backend must be one of"),
        (lambda q, k, v: explain_backend(q, **ARGS), TypeError, r"takes \(q, k, v\) like bra, or \(q, v\); got 1"),
        (lambda q, k, v: explain_backend(q, k, v, **ARGS, routing_index=index_with(-1)), ValueError, "got -1 at"),
    ],
    ids=["heads", "topk", "backend", "one-tensor", "index"],
)
def test_explain_backend_refuses_what_bra_refuses(call, error, message):
    with pytest.raises(error, match=message):
        call(*qkv())
