"""backend="auto": it never picks a backend that cannot run the request, it follows the measurements, it explains
itself; and AMP never changes the routing (bf16 autocast routes like float32)."""

from __future__ import annotations

import itertools

import pytest
import torch

from bralib.ops import BiLevelRoutingAttention, bra, explain_backend, route_regions
from bralib.ops.backends import BACKENDS, choose_backend
from bralib.ops.backends.auto import MEASURED_PATH, explain_request, load_measured
from bralib.ops.routing import top_regions

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SHAPES = [(56, 56, 7, 1), (28, 28, 7, 4), (14, 14, 7, 16), (14, 21, 7, 49), (8, 8, 1, 1), (6, 9, 3, 2)]


def fake_runs(fastest: str) -> list[dict]:
    """Measurements on every device and dtype in which ``fastest`` beats everything by far, in both modes."""
    runs = []
    for device, dtype in itertools.product(("cpu", "cuda"), ("float32", "bfloat16")):
        shapes = []
        for height, width, n_win, topk in SHAPES:
            times = {name: 10.0 for name in BACKENDS}
            times[fastest] = 0.001
            shapes.append({
                "label": "fake", "batch": 1, "height": height, "width": width, "n_win": n_win, "topk": topk,
                "num_heads": 1, "tokens": height * width, "tokens_per_region": height * width // n_win**2,
                "forward_ms": dict(times), "train_ms": dict(times),
            })  # fmt: skip
        runs.append({"source": "test", "device": device, "dtype": dtype, "shapes": shapes})
    return runs


@pytest.mark.parametrize("fastest", list(BACKENDS))
def test_auto_never_picks_a_backend_that_cannot_run_the_request(fastest):
    """Even when the measurements say an unusable backend is fastest, auto skips it (and uses it where it can)."""
    runs = fake_runs(fastest)
    picked_fastest = 0
    for device, dtype, needs_grad, compiling, (h, w, n_win, topk) in itertools.product(
        ("cpu", "cuda"), DTYPES, (False, True), (False, True), SHAPES
    ):
        choice = explain_request(
            device, dtype, h, w, n_win=n_win, topk=topk, needs_grad=needs_grad, runs=runs, compiling=compiling
        )
        backend = BACKENDS[choice.backend]
        assert backend.problem(device, dtype, needs_grad) is None, (choice.backend, device, dtype, needs_grad)
        assert compiling or not backend.needs_compile, f"{choice.backend} needs torch.compile, request is eager"
        assert choice.backend != "reference"
        picked_fastest += choice.backend == fastest
    if fastest == "flex":  # only on requests it can run: forward on CPU or anything on CUDA, when compiling
        assert 0 < picked_fastest < 2 * 2 * 2 * 2 * len(SHAPES) * len(DTYPES) // 4
    elif fastest != "reference" and BACKENDS[fastest].problem("cuda", torch.float32, needs_grad=False) is None:
        assert picked_fastest > 0, "the measurements were ignored"


def test_auto_choices_run_on_this_machine():
    """The real measured.json: whatever auto picks here must actually run, forward and backward."""
    for (h, w, n_win, topk), needs_grad in itertools.product(SHAPES[1:], (False, True)):
        q, k, v = (torch.randn(1, h, w, 8, requires_grad=needs_grad) for _ in range(3))
        assert choose_backend(q, v, n_win=n_win, topk=topk, needs_grad=needs_grad) != "flex" or not needs_grad
        out = bra(q, k, v, num_heads=2, n_win=n_win, topk=topk, backend="auto")
        if needs_grad:
            out.sum().backward()
            assert q.grad is not None and torch.isfinite(q.grad).all()


def test_auto_follows_the_measurements_and_explains_itself(capsys):
    runs = fake_runs("dense")
    choice = explain_request("cpu", torch.float32, 14, 14, n_win=7, topk=16, needs_grad=True, runs=runs)
    assert choice.backend == "dense"
    assert "nearest measured shape" in str(choice) and "fastest runnable backend" in str(choice)
    assert "flex" in choice.excluded and "no backward on cpu" in choice.excluded["flex"]
    # A dtype that was not measured falls back to the nearest one, and says so.
    choice = explain_request("cpu", torch.float64, 14, 14, n_win=7, topk=16, needs_grad=False, runs=runs)
    assert "no float64 measurements on cpu: using the float32 ones" in str(choice)
    # No measurements at all: the stated fallback.
    choice = explain_request("cpu", torch.float32, 14, 14, n_win=7, topk=16, needs_grad=False, runs=[])
    assert choice.backend == "sdpa" and "no measurements for cpu" in str(choice)
    # The public helper prints the same explanation.
    q = torch.randn(1, 14, 14, 8)
    returned = explain_backend(q, q, n_win=7, topk=4, needs_grad=False)
    assert str(returned) in capsys.readouterr().out
    with pytest.raises(ValueError, match="topk must be an integer"):
        explain_backend(q, q, n_win=7, topk=50)


def test_auto_refuses_a_request_no_backend_can_run():
    with pytest.raises(ValueError, match="no BRA backend can run"):
        explain_request("cpu", torch.int64, 14, 14, n_win=7, topk=4, needs_grad=False, runs=[])


def test_the_stored_measurements_are_well_formed():
    runs = load_measured(MEASURED_PATH)
    assert runs, "measured.json has no runs"
    for run in runs:
        assert run["device"] in ("cpu", "cuda") and run["source"]
        for shape in run["shapes"]:
            assert shape["tokens"] == shape["height"] * shape["width"]
            assert set(shape["forward_ms"]) <= set(BACKENDS) and set(shape["train_ms"]) <= set(BACKENDS)


# ---------------------------------------------------------------- AMP keeps the routing


def near_tie_qk(dtype=torch.float32):
    """q, k on a 2x2 grid of regions where region 0's two best keys differ by 2**-9 in their logits.

    Every token of a region is equal, so region means are exact. In float32 region 3 wins for region 0
    (logit 1 + 2**-9 against 1 + 2**-10 for region 1); rounded to bfloat16 (8 significant bits) both logits
    are 1.0, the tie goes to the lower index, and region 1 would be routed instead.
    """
    q_regions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    k_regions = torch.tensor([[-1.0, 0.0], [1.0 + 2**-10, 0.0], [0.0, 0.5], [1.0 + 2**-9, 0.0]])

    def expand(regions):  # (4, 2) -> (1, 4, 4, 2): 2x2 regions of 2x2 tokens each, region-major numbering
        grid = regions.view(2, 2, 1, 1, 2).expand(2, 2, 2, 2, 2)  # (S, S, h, w, C)
        return grid.permute(0, 2, 1, 3, 4).reshape(1, 4, 4, 2).to(dtype).contiguous()

    return expand(q_regions), expand(k_regions)


def test_bf16_autocast_routes_like_float32_where_bf16_would_flip_the_top_k():
    q, k = near_tie_qk()
    _, index32 = route_regions(q, k, n_win=2, topk=1, scale=1.0)
    assert index32[0, 0, 0] == 3
    # The construction is sharp: routing computed in bfloat16 picks another region.
    q_r, k_r = (t.view(1, 2, 2, 2, 2, 2).permute(0, 1, 3, 2, 4, 5).reshape(1, 4, 4, 2).mean(2) for t in (q, k))
    _, index_bf16 = top_regions(q_r.bfloat16(), k_r.bfloat16(), topk=1, scale=1.0)
    assert index_bf16[0, 0, 0] == 1, "bf16 routing should flip here; if not, the test below proves nothing"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, index_amp = route_regions(q, k, n_win=2, topk=1, scale=1.0)
        kwargs = dict(num_heads=1, n_win=2, topk=1, routing_scale=1.0, return_routing=True)
        _, index_bra = bra(q, k, k, backend="lean", **kwargs)
    assert logits.dtype == torch.float32
    assert torch.equal(index_amp, index32)
    assert torch.equal(index_bra, index32)


def test_bf16_autocast_module_routes_like_float32():
    """The layer routes from x, projected in float32 under autocast, so it matches float32 where bf16 would not."""
    q, k = near_tie_qk()
    x = torch.cat([q, k], dim=-1)  # (1, 4, 4, 4): channels 0-1 become the queries, 2-3 the keys
    layer = BiLevelRoutingAttention(4, 1, n_win=2, topk=1, qk_dim=2, side_dwconv=0)
    with torch.no_grad():
        weight = torch.zeros(8, 4)
        weight[0:2, 0:2] = torch.eye(2)  # q = x[..., :2]
        weight[2:4, 2:4] = torch.eye(2)  # k = x[..., 2:]
        weight[4:8] = torch.eye(4)  # v = x
        layer.qkv.weight.copy_(weight)
        layer.qkv.bias.zero_()
    _, index32 = layer(x, return_routing=True)
    assert index32[0, 0, 0] == 3
    q_r, k_r = (t.view(1, 2, 2, 2, 2, 2).permute(0, 1, 3, 2, 4, 5).reshape(1, 4, 4, 2).mean(2) for t in (q, k))
    _, index_bf16 = top_regions(q_r.bfloat16(), k_r.bfloat16(), topk=1, scale=2**-0.5)
    assert index_bf16[0, 0, 0] == 1, "routing in bf16 flips here"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, index_amp = layer(x, return_routing=True)
    assert torch.equal(index_amp, index32)
