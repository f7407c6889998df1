"""The BiFormer network: forward paths, features for dense prediction, configs, and device/dtype/compile use."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import bralib
from bralib.models import MODEL_CONFIGS, BiFormer, BiFormerConfig, routing_maps
from bralib.ops import BiLevelRoutingAttention


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def nano() -> BiFormer:
    torch.manual_seed(0)
    return bralib.create_model("biformer_nano", num_classes=10).eval()


# ---------------------------------------------------------------- forward paths and features


def test_forward_is_features_then_head(nano):
    images = _images(2, 3, 64, 64)
    with torch.no_grad():
        logits = nano(images)
        features = nano.forward_features(images)
        assert features.shape == (2, 160, 2, 2)
        assert torch.equal(logits, nano.forward_head(features))
        assert nano.forward_head(features, pre_logits=True).shape == (2, 160)
    assert logits.shape == (2, 10)


@pytest.mark.parametrize(
    ("size", "maps"),
    [((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]), ((230, 310), [(58, 78), (29, 39), (15, 20), (8, 10)])],
)
def test_features_only_maps_at_strides_4_to_32(size, maps):
    model = bralib.create_model("biformer_tiny", features_only=True, auto_pad=True).eval()
    assert [(f.channels, f.stride) for f in model.feature_info] == [(64, 4), (128, 8), (256, 16), (512, 32)]
    with torch.no_grad():
        outputs = model(_images(1, 3, *size))
    assert [tuple(o.shape) for o in outputs] == [
        (1, f.channels, *m) for f, m in zip(model.feature_info, maps, strict=True)
    ]
    assert all(o.is_contiguous() or o.is_contiguous(memory_format=torch.channels_last) for o in outputs)
    assert not any(p.requires_grad and p.grad is not None for p in model.parameters())
    assert not hasattr(model, "head") or model.head is None


def test_auto_pad_changes_nothing_when_no_padding_is_needed():
    torch.manual_seed(0)
    plain = bralib.create_model("biformer_micro").eval()
    padded = bralib.create_model("biformer_micro", auto_pad=True).eval()
    padded.load_state_dict(plain.state_dict())
    images = _images(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(padded(images), plain(images), rtol=0, atol=0)


def test_sizes_that_need_padding_are_explained():
    model = bralib.create_model("biformer_tiny", features_only=True)
    with pytest.raises(ValueError, match=r"230x310 input gives stage 1 a 58x78 map.*multiples of 112.*auto_pad=True"):
        model(_images(1, 3, 230, 310))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(_images(3, 224, 224))


def test_features_only_model_has_no_head():
    model = bralib.create_model("biformer_nano", features_only=True)
    with pytest.raises(RuntimeError, match="no classifier head"):
        model.forward_head(_images(1, 160, 2, 2))
    with pytest.raises(RuntimeError, match="features_only"):
        model.forward_features(_images(1, 3, 64, 64))


def test_routing_maps_cover_every_bra_block(nano):
    routes = routing_maps(nano, _images(2, 3, 64, 64))
    config = nano.config
    assert len(routes) == sum(d for d, k in zip(config.depths, config.topks, strict=True) if k is not None)
    first = routes[0]
    assert (first.stage, first.block, first.n_win, first.map_size) == (0, 0, 4, (16, 16))
    assert first.index.shape == (2, 16, 4) and first.index.dtype == torch.long


# ---------------------------------------------------------------- configs


def test_released_variants_use_the_released_attention_scale():
    for name in ("biformer_tiny", "biformer_small", "biformer_base"):
        assert MODEL_CONFIGS[name].scale_mode == "official"
    model = bralib.create_model("biformer_small")
    bras = [m for m in model.modules() if isinstance(m, BiLevelRoutingAttention)]
    assert len(bras) == 4 + 4 + 18
    assert all(m.scale == m.qk_dim**-0.5 for m in bras)  # full width, not head_dim ** -0.5
    assert [m.topk for m in bras] == [1] * 4 + [4] * 4 + [16] * 18
    nano = bralib.create_model("biformer_nano")
    assert all(
        m.scale == (m.qk_dim // m.num_heads) ** -0.5 for m in nano.modules() if isinstance(m, BiLevelRoutingAttention)
    )


def test_drop_path_grows_linearly_to_the_given_rate():
    model = bralib.create_model("biformer_tiny", drop_path_rate=0.1)
    rates = [block.drop_path.drop_prob for stage in model.stages for block in stage.blocks]
    assert len(rates) == 14 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert all(b - a == pytest.approx(0.1 / 13) for a, b in zip(rates[:-1], rates[1:], strict=True))


def test_init_is_truncated_normal_for_linear_layers():
    model = bralib.create_model("biformer_tiny")
    block = model.stages[2].blocks[0]
    # trunc_normal_(std=0.02) cuts at +-2 (absolute, as timm's): in effect a plain normal with std 0.02
    assert block.mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.fc1.weight.mean().abs() < 1e-3 and block.mlp.fc1.bias.abs().sum() == 0
    assert torch.equal(block.attn_norm.weight, torch.ones(256)) and block.attn_norm.bias.abs().sum() == 0


def test_config_validation():
    base = MODEL_CONFIGS["biformer_tiny"]
    with pytest.raises(ValueError, match="depths has 3 entries but dims has 4"):
        dataclasses.replace(base, depths=(2, 2, 8))
    with pytest.raises(ValueError, match="heads=3 must be positive and divide dims=64"):
        dataclasses.replace(base, heads=(3, 4, 8, 8))
    with pytest.raises(ValueError, match=r"topk=50 must be None \(global attention\) or in \[1, 49\]"):
        dataclasses.replace(base, topks=(50, 4, 16, None))
    with pytest.raises(ValueError, match="stem must be one of"):
        dataclasses.replace(base, stem="conv7x7")
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        BiFormer(base, drop_path_rate=1.0)
    assert isinstance(base, BiFormerConfig) and base.num_blocks == 14


# ---------------------------------------------------------------- devices, dtypes, memory formats, compile


def test_channels_last_gives_the_same_result(nano):
    images = _images(2, 3, 64, 64)
    model = bralib.create_model("biformer_nano", num_classes=10).eval()
    model.load_state_dict(nano.state_dict())
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(images.to(memory_format=torch.channels_last)), nano(images))


def test_bfloat16_autocast_on_cpu(nano):
    images = _images(2, 3, 64, 64)
    with torch.no_grad():
        reference = nano(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = nano(images)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize("backend", ["auto", "gather", "sdpa", "lean", "dense"])
def test_forward_and_backward_create_no_tensors_on_the_cpu(backend):
    """On the meta device every tensor the forward creates must follow its input (a CPU one would clash)."""
    model = bralib.create_model("biformer_tiny", num_classes=10, drop_path_rate=0.2, auto_pad=True, backend=backend)
    model = model.to("meta")
    logits = model.train()(torch.randn(2, 3, 60, 90, device="meta"))
    logits.sum().backward()
    assert logits.device.type == "meta" and model.stem.conv1.weight.grad.device.type == "meta"
    maps = bralib.create_model("biformer_nano", features_only=True).to("meta")(torch.randn(1, 3, 64, 64, device="meta"))
    assert [m.device.type for m in maps] == ["meta"] * 4


def test_torch_compile_traces_the_whole_model_without_graph_breaks(nano):
    images = _images(2, 3, 64, 64)
    compiled = torch.compile(nano, fullgraph=True, backend="aot_eager")  # tracing only; inductor is slow on CPU
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), nano(images))
    torch._dynamo.reset()


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager(nano):
    images = _images(2, 3, 64, 64)
    compiled = torch.compile(nano, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), nano(images), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
