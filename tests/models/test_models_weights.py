"""Official checkpoints: the released key layout, loading, the reverse export, and strict, readable errors."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from official_layout import official_forward, official_state_dict

import bralib
from bralib.models import OfficialWeightsError, load_official_weights, to_official_state_dict

TINY = dict(dims=(64, 128, 256, 512), depths=(2, 2, 8, 2))


@pytest.fixture(scope="module")
def official_tiny() -> dict[str, torch.Tensor]:
    """BiFormer-T weights in the released layout, built from the reference's description (float64)."""
    return official_state_dict(**TINY)


def test_official_layout_has_264_keys_named_as_released(official_tiny):
    model = bralib.create_model("biformer_tiny")
    exported = to_official_state_dict(model)
    assert len(official_tiny) == 264
    assert list(exported) == list(official_tiny)  # same names, same order
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in official_tiny.items()}
    # spot checks against the reference's wording
    assert "stages.0.0.attn.qkv.qkv.weight" in exported and "stages.3.1.attn.qkv.bias" not in exported
    assert "downsample_layers.0.4.running_var" in exported and "stages.2.7.mlp.3.bias" in exported


def test_loading_official_weights_gives_the_released_forward(official_tiny):
    """bralib with the loaded weights computes what the released network computes with them."""
    model = load_official_weights(bralib.create_model("biformer_tiny").double().eval(), official_tiny)
    images = torch.randn(2, 3, 112, 112, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(images)
        released = official_forward(official_tiny, images, **TINY)
    torch.testing.assert_close(ours, released, rtol=1e-9, atol=1e-9)
    # The check can fail: the paper's head_dim ** -0.5 scale is a different network for the same weights.
    paper = load_official_weights(
        bralib.create_model("biformer_tiny", scale_mode="paper").double().eval(), official_tiny
    )
    with torch.no_grad():
        assert (paper(images) - released).abs().max() > 1e-3


def test_loaded_model_equals_the_model_whose_weights_were_exported():
    torch.manual_seed(0)
    source = bralib.create_model("biformer_tiny", num_classes=10).eval()
    for module in source.modules():  # non-trivial BatchNorm statistics, so buffers must travel too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    target = load_official_weights(bralib.create_model("biformer_tiny", num_classes=10).eval(),
                                   {k: v.clone() for k, v in to_official_state_dict(source).items()})  # fmt: skip
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(source(images), target(images))


def test_round_trip_official_to_bralib_to_official_is_the_identity(official_tiny):
    model = load_official_weights(bralib.create_model("biformer_tiny").double(), official_tiny)
    back = to_official_state_dict(model)
    assert list(back) == list(official_tiny)
    assert all(torch.equal(back[k], official_tiny[k]) for k in official_tiny)


def test_reads_whole_checkpoints_files_and_bare_state_dicts(tmp_path, official_tiny):
    state = {k: v.float() if v.is_floating_point() else v for k, v in official_tiny.items()}
    images = torch.randn(1, 3, 112, 112)
    reference = load_official_weights(bralib.create_model("biformer_tiny").eval(), state)
    # a training checkpoint of the released code: weights under "model", plus its argparse arguments
    path = tmp_path / "biformer_tiny_in1k.pth"
    torch.save({"model": state, "epoch": 299, "args": argparse.Namespace(model="biformer_tiny", lr=5e-4)}, path)
    for source in (str(path), path, {"model": state}):
        model = load_official_weights(bralib.create_model("biformer_tiny").eval(), source)
        with torch.no_grad():
            assert torch.equal(model(images), reference(images))
    from_create = bralib.create_model("biformer_tiny", pretrained=path).eval()
    with torch.no_grad():
        assert torch.equal(from_create(images), reference(images))


def test_features_only_models_take_the_backbone(official_tiny):
    backbone = load_official_weights(bralib.create_model("biformer_tiny", features_only=True), official_tiny)
    assert torch.equal(backbone.stages[2].blocks[7].mlp.fc2.bias, official_tiny["stages.2.7.mlp.3.bias"].float())


def test_missing_and_unexpected_keys_are_listed_grouped(official_tiny):
    state = dict(official_tiny)
    for leaf in ("weight", "bias"):
        del state[f"stages.1.0.attn.qkv.qkv.{leaf}"]
    del state["head.bias"]
    state["stages.0.0.attn.router.emb.weight"] = torch.zeros(64, 64)
    state["stages.0.0.gamma1"] = torch.zeros(64)
    with pytest.raises(OfficialWeightsError) as info:
        load_official_weights(bralib.create_model("biformer_tiny"), state)
    message = str(info.value)
    assert "missing from the checkpoint (3 keys):" in message
    assert "  stages.1.0.attn.qkv.qkv.{weight, bias}\n" in message  # one module a line, leaves grouped
    assert re.search(r"^  head\.bias$", message, re.M)
    assert "in the checkpoint but not in this model (2 keys):" in message
    assert "  stages.0.0.attn.router.emb.weight" in message and "  stages.0.0.gamma1" in message


def test_a_shape_mismatch_names_the_key_and_both_shapes(official_tiny):
    model = bralib.create_model("biformer_tiny", num_classes=10)
    with pytest.raises(OfficialWeightsError) as info:
        load_official_weights(model, official_tiny)
    message = str(info.value)
    assert "shape mismatch for head.weight (bralib head.weight): checkpoint (1000, 512), model (10, 512)" in message
    assert "head.bias" in message and "num_classes=10" in message
    with pytest.raises(OfficialWeightsError, match=r"missing from the checkpoint \(\d+ keys\)"):
        load_official_weights(bralib.create_model("biformer_small"), official_tiny)  # deeper than the file


def test_bad_sources_are_explained(tmp_path, official_tiny):
    model = bralib.create_model("biformer_tiny")
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_official_weights(model, tmp_path / "missing.pth")
    with pytest.raises(OfficialWeightsError, match="not tensors: .*epoch"):
        load_official_weights(model, {**official_tiny, "epoch": 3})
    with pytest.raises(TypeError, match="a path or a mapping"):
        load_official_weights(model, 42)
    with pytest.raises(ValueError, match="official key layout"):
        load_official_weights(bralib.create_model("table6_swin_layout"), official_tiny)


class Untrusted:  # any class outside torch's weights-only allowlist
    pass


def test_arbitrary_pickled_objects_are_refused(tmp_path, official_tiny):
    path = tmp_path / "untrusted.pth"
    torch.save({"model": official_tiny, "extra": Untrusted()}, path)
    with pytest.raises(OfficialWeightsError, match=r"global .*Untrusted is not allowed") as info:
        load_official_weights(bralib.create_model("biformer_tiny"), path)
    assert "weights_only=False" not in str(info.value)  # never advise turning the safety off
