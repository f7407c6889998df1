"""timm's model conventions on BiFormer: classifier reset, head, intermediates, pretrained_cfg, grad checkpointing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bralib
from bralib.bench.measure import saved_bytes
from bralib.models import BiFormer, BiFormerBlock


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def nano() -> BiFormer:
    torch.manual_seed(0)
    return bralib.create_model("biformer_nano", num_classes=10).eval()


# ---------------------------------------------------------------- classifier and head


def test_reset_classifier_replaces_the_head(nano):
    images = _images(2, 3, 64, 64)
    with torch.no_grad():
        pooled = nano.forward_head(nano.forward_features(images), pre_logits=True)
    nano.reset_classifier(7)
    assert isinstance(nano.get_classifier(), nn.Linear) and nano.get_classifier().out_features == 7
    assert nano.num_classes == 7 and nano.pretrained_cfg["num_classes"] == 7
    with torch.no_grad():
        assert nano(images).shape == (2, 7)
        assert torch.allclose(nano(images), nano.head(pooled))
    nano.reset_classifier(0, global_pool="avg")
    with torch.no_grad():
        assert torch.equal(nano(images), pooled)  # num_classes=0: the pooled (B, C4) features
    assert nano.num_features == 160


def test_reset_classifier_rejects_what_biformer_cannot_do(nano):
    with pytest.raises(ValueError, match="global_pool must be None or 'avg'"):
        nano.reset_classifier(5, global_pool="max")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 0"):
        nano.reset_classifier(-1)
    features = bralib.create_model("biformer_nano", features_only=True)
    with pytest.raises(RuntimeError, match="features_only model has no classifier"):
        features.reset_classifier(5)


def test_forward_head_pre_logits_is_the_pooled_features(nano):
    images = _images(2, 3, 64, 64)
    with torch.no_grad():
        features = nano.forward_features(images)  # (2, 160, 2, 2)
        assert torch.equal(nano.forward_head(features, pre_logits=True), features.mean(dim=(2, 3)))
        assert torch.equal(nano.forward_head(features), nano(images))


# ---------------------------------------------------------------- forward_intermediates


def test_forward_intermediates_gives_the_stage_maps_and_the_final_features(nano):
    images = _images(1, 3, 64, 64)
    with torch.no_grad():
        maps = nano.forward_stages(images)
        final, inter = nano.forward_intermediates(images)
        assert torch.equal(final, nano.forward_features(images))
        assert len(inter) == 4 and all(torch.equal(a, b) for a, b in zip(inter, maps, strict=True))
        assert [tuple(m.shape[1:]) for m in inter] == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (160, 2, 2)]
        last_two = nano.forward_intermediates(images, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two, maps[2:], strict=True))
        picked = nano.forward_intermediates(images, indices=[0, -1], norm=True, intermediates_only=True)
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], nano.head_norm(maps[3]))
        early, inter = nano.forward_intermediates(images, indices=[1], stop_early=True)
        assert torch.equal(early, maps[1]) and torch.equal(inter[0], maps[1])  # stages 3 and 4 never ran


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"indices": 5}, r"in \[1, 4\]"), ({"indices": [4]}, r"stage numbers in \[-4, 4\)"),
     ({"indices": []}, "is empty"), ({"output_fmt": "NHWC"}, "output_fmt must be 'NCHW'")],
)  # fmt: skip
def test_forward_intermediates_rejects_bad_arguments(nano, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nano.forward_intermediates(_images(1, 3, 64, 64), **kwargs)


# ---------------------------------------------------------------- pretrained_cfg


def test_pretrained_cfg_describes_input_and_layers():
    model = bralib.create_model("biformer_tiny")
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == "biformer_tiny"
    assert cfg["input_size"] == (3, 224, 224) and cfg["fixed_input_size"] is True
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"  # the release: resize 256, crop 224
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    classifier = model.get_submodule(cfg["classifier"])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg["num_classes"] == 1000
    patchify = bralib.create_model("table6_swin_layout", in_chans=1, auto_pad=True).pretrained_cfg
    assert patchify["first_conv"] == "stem.conv" and patchify["input_size"] == (1, 224, 224)
    assert patchify["fixed_input_size"] is False
    assert bralib.create_model("biformer_nano", depths=[1, 1, 1, 1]).pretrained_cfg["architecture"] is None


# ---------------------------------------------------------------- gradient checkpointing


def _train_step(model: BiFormer, images: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same drop-path masks for both runs
    model(images).logsumexp(dim=-1).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_grad_checkpointing_gives_identical_gradients_and_recomputes_each_block(monkeypatch):
    torch.manual_seed(0)
    model = bralib.create_model("biformer_nano", num_classes=10, drop_path_rate=0.2).train()
    images = _images(2, 3, 64, 64)
    calls, forward = [], BiFormerBlock.forward

    def counted(self, *args, **kwargs):  # module hooks do not fire in the recomputation: count the calls
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(BiFormerBlock, "forward", counted)
    plain = _train_step(model, images)
    plain_calls, calls[:] = len(calls), []
    model.set_grad_checkpointing(True)
    checkpointed = _train_step(model, images)
    assert plain_calls == 5 and len(calls) == 2 * plain_calls  # each block ran again in the backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 100
    assert all(torch.equal(plain[name], checkpointed[name]) for name in plain)  # bit for bit, dropout included
    checkpointed_saved, _ = saved_bytes(lambda: model(images).sum())
    model.set_grad_checkpointing(False)
    plain_saved, _ = saved_bytes(lambda: model(images).sum())
    assert checkpointed_saved < plain_saved / 3
    with torch.no_grad():  # without gradients nothing is checkpointed: one forward per block
        model.set_grad_checkpointing(True)
        calls[:] = []
        model(images)
        assert len(calls) == 5
