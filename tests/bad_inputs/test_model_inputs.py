"""Bad input to the BiFormer models: refused at construction (or at the forward's first line) with a message that
names the field, its value and what is allowed; never a model that builds and fails, or is wrong, later."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bralib
from bralib.models.layers import DropPath, GlobalAttention, Mlp


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(in_chans=0), r"in_chans must be a positive integer \(3 for RGB images, 1 for grey\), got 0"),
        (dict(in_chans=-3), r"in_chans must be a positive integer .* got -3"),
        (dict(in_chans=1.5), r"in_chans must be a positive integer .* got 1.5"),
        (dict(in_chans=True), r"in_chans must be a positive integer .* got True"),
        (dict(depths=(1, 0, 2, 1)), r"depths must be positive integers, one per stage, got \(1, 0, 2, 1\)"),
        (dict(depths=(1, -1, 2, 1)), r"depths must be positive integers, one per stage, got \(1, -1, 2, 1\)"),
        (dict(dims=(33, 64, 128, 160), heads=(1, 2, 4, 5)), r"dims\[0\] must be even, got 33"),
        (dict(dims=(32, 64, 128, 160), heads=(1, 2, 3, 5)), r"heads=3 must be positive and divide dims=128"),
        (dict(n_win=(3, 4, 2, 1)), r"stage 1: n_win=3 does not divide its 16x16 map at input_size=64.*auto_pad=True"),
        (dict(n_win=(4, 4, 3, 1)), r"stage 3: n_win=3 does not divide its 4x4 map at input_size=64"),
        (dict(input_size=60), r"stage 1: n_win=4 does not divide its 15x15 map at input_size=60"),
        (dict(input_size=0), r"input_size must be a positive integer \(the image side\), got 0"),
        (dict(pos_conv=2), r"pos_conv must be 0 \(none\) or an odd kernel size \(1, 3, 5, ...\), got 2"),
        (dict(pos_conv=-3), r"pos_conv must be 0 \(none\) or an odd kernel size .* got -3"),
        (dict(pos_conv=3.0), r"pos_conv must be 0 \(none\) or an odd kernel size .* got 3.0"),
        (dict(local_kernel=4), r"local_kernel must be 0 \(none\) or an odd kernel size .* got 4"),
        (dict(mlp_ratio=0), r"mlp_ratio must be a positive number \(the MLP's hidden width / C\), got 0"),
        (dict(mlp_ratio=float("nan")), r"mlp_ratio must be a positive number .* got nan"),
        (dict(mlp_ratio=0.01), r"mlp_ratio=0.01 gives an MLP with no hidden channel at dims=32"),
        (dict(num_classes=-1), r"num_classes must be >= 0 \(an integer; 0: no classifier\), got -1"),
        (dict(drop_path_rate=1.0), r"drop_path_rate must be in \[0, 1\)"),
        (dict(auto_pad="yes"), r"auto_pad must be True or False, got 'yes'"),
        (dict(topks=(0, 4, 2, None)), r"topk=0 must be None \(global attention\) or in \[1, 16\]"),
    ],
    ids=lambda value: "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else "",
)
def test_a_bad_model_is_refused_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        bralib.create_model("biformer_nano", **overrides)


def test_auto_pad_lifts_the_design_size_check():
    model = bralib.create_model("biformer_nano", num_classes=3, n_win=(3, 4, 2, 1), auto_pad=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_no_position_encoding_is_allowed():
    model = bralib.create_model("biformer_nano", num_classes=3, pos_conv=0).eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 64, 64))).all()


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return bralib.create_model("biformer_nano", num_classes=4).eval()


@pytest.mark.parametrize(
    "images,error,message",
    [
        (torch.zeros(1, 1, 64, 64), ValueError, r"x must be an image batch \(B, 3, H, W\), got shape \(1, 1, 64, 64\)"),
        (torch.zeros(3, 64, 64), ValueError, r"x must be an image batch \(B, 3, H, W\), got shape \(3, 64, 64\)"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), ValueError, r"floating-point tensor, got torch.uint8: .*/ 255"),
        (np.zeros((1, 3, 64, 64), dtype=np.float32), TypeError, r"x must be a torch.Tensor image batch .* ndarray"),
        (
            torch.zeros(1, 3, 20, 20),
            ValueError,
            r"a 20x20 input gives stage 1 a 5x5 map, which does not split into 4x4",
        ),
    ],
    ids=["one-channel", "no-batch", "uint8", "numpy", "too-small"],
)
def test_bad_images_are_refused_before_the_stem(nano, images, error, message):
    with pytest.raises(error, match=message):
        nano(images)


def test_an_empty_image_is_refused_even_with_auto_pad():
    model = bralib.create_model("biformer_nano", auto_pad=True).eval()
    with pytest.raises(ValueError, match=r"x has an empty image \(0x64 pixels\): H and W must be at least 1"):
        model(torch.zeros(1, 3, 0, 64))


def test_tiny_images_work_with_auto_pad():
    model = bralib.create_model("biformer_nano", num_classes=5, auto_pad=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 1, 7)).shape == (2, 5)


def test_an_empty_batch_gives_empty_logits(nano):
    with torch.no_grad():
        assert nano(torch.zeros(0, 3, 64, 64)).shape == (0, 4)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: GlobalAttention(8, num_heads=0), r"num_heads must be a positive integer, got 0"),
        (lambda: GlobalAttention(8, num_heads=3), r"dim=8 is not divisible by num_heads=3"),
        (lambda: GlobalAttention(0, num_heads=1), r"dim must be a positive integer, got 0"),
        (lambda: GlobalAttention(8, num_heads=2, lepe_kernel=2), r"lepe_kernel must be 0 \(none\) or an odd kernel"),
        (lambda: Mlp(8, 0), r"hidden_dim must be a positive integer, got 0"),
        (lambda: DropPath(1.0), r"drop_prob must be a number in \[0, 1\), got 1.0"),
        (lambda: DropPath(True), r"drop_prob must be a number in \[0, 1\), got True"),
    ],
    ids=["heads-0", "heads-3", "dim-0", "lepe-even", "mlp-hidden-0", "drop-1", "drop-bool"],
)
def test_the_layers_refuse_bad_settings(build, message):
    with pytest.raises(ValueError, match=message):
        build()
