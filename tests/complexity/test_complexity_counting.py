"""count_flops: multiply-adds of real forwards, against hand counts of the same layers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bralib.complexity import count_flops, count_flops_by_module
from bralib.ops.attention import BiLevelRoutingAttention


def test_linear_is_one_per_multiply_add():
    # FlopCounterMode reports 2 per multiply-add; count_flops must report the MACs, bias not counted.
    assert count_flops(nn.Linear(64, 32), torch.randn(10, 64)) == 10 * 64 * 32


def test_depthwise_and_dense_conv():
    depthwise = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    assert count_flops(depthwise, torch.randn(2, 8, 12, 12)) == 2 * 12 * 12 * 8 * 25
    dense = nn.Conv2d(8, 16, 3, padding=1)
    assert count_flops(dense, torch.randn(1, 8, 10, 10)) == 10 * 10 * 16 * 8 * 9


def test_cpu_sdpa_is_counted():
    # F.scaled_dot_product_attention on CPU runs a kernel FlopCounterMode does not know; we count it.
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 14, 8), torch.randn(2, 3, 14, 8)
    expected = 2 * 2 * 3 * 10 * 14 * 8  # QK^T and AV
    assert count_flops(F.scaled_dot_product_attention, q, k, v) == expected
    assert count_flops(lambda a, b, c: torch.softmax(a @ b.transpose(-1, -2), -1) @ c, q, k, v) == expected


def test_elementwise_adds_what_flop_counter_misses():
    x = torch.randn(4, 6, 5)
    assert count_flops(lambda t: t.mean(dim=1), x) == 0
    assert count_flops(lambda t: t.mean(dim=1), x, elementwise=True) == 4 * 6 * 5
    assert count_flops(lambda t: t + t, x, elementwise=True) == x.numel()
    assert count_flops(lambda t: torch.softmax(t, -1), x, elementwise=True) == x.numel()


def test_kwargs_reach_the_module():
    layer = BiLevelRoutingAttention(16, 2, n_win=2, topk=1, backend="gather")
    x = torch.randn(1, 8, 8, 16)
    assert count_flops(layer, x, return_routing=True) == count_flops(layer, x)


@pytest.mark.parametrize("backend", ["gather", "sdpa", "lean"])
def test_bra_layer_hand_count(backend):
    hw, c, s, k, kernel = 56 * 56, 64, 7, 4, 5
    layer = BiLevelRoutingAttention(c, 2, n_win=s, topk=k, side_dwconv=kernel, backend=backend)
    by_module = count_flops_by_module(layer, torch.randn(1, 56, 56, c), inclusive=False)
    assert by_module["qkv"] == hw * c * 3 * c
    assert by_module["lce"] == hw * c * kernel**2
    assert by_module["proj"] == hw * c * c
    routing = s * s * c * 2 * c + (s * s) ** 2 * c  # region-mean projection + region adjacency
    token_attention = 2 * hw * k * (hw // (s * s)) * c
    assert by_module[""] == routing + token_attention
    inclusive = count_flops_by_module(layer, torch.randn(1, 56, 56, c))
    assert inclusive[""] == sum(by_module.values())


def test_own_counts_skip_containers_that_are_never_called():
    # nn.ModuleList is never called, so "blocks" is not tracked while "blocks.0" is: the own count of the
    # outer module must subtract its nearest counted descendants, and the own counts must sum to the total.
    class Stage(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 4)])

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    model = nn.Sequential(Stage(), nn.Linear(4, 2))
    x = torch.randn(3, 8)
    own = count_flops_by_module(model, x, inclusive=False)
    assert own == {"": 0, "0.blocks.0": 3 * 8 * 8, "0.blocks.1": 3 * 8 * 4, "1": 3 * 4 * 2}
    assert sum(own.values()) == count_flops(model, x)


def test_bad_module():
    with pytest.raises(TypeError, match="nn.Module"):
        count_flops_by_module(lambda x: x, torch.randn(2))
    with pytest.raises(TypeError, match="nn.Module"):
        count_flops(42, torch.randn(2))


def test_import_is_cheap():
    code = "import sys, bralib.complexity; print('sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
