"""The pieces of the recipe, one by one: param groups, schedule, mixup/cutmix, label smoothing, EMA, config."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bralib.train.config import TrainConfig, add_config_arguments, config_differences, config_from_args
from bralib.train.ema import ModelEma
from bralib.train.mixup import Mixup, smooth_one_hot, soft_target_cross_entropy
from bralib.train.optim import WarmupCosine, param_groups, warmup_cosine


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 4)


def test_no_weight_decay_on_norms_biases_and_position_convs():
    model = Block()
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["fc.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "fc.bias", "norm.bias", "norm.weight", "pos_embed.bias", "pos_embed.weight",
    ]  # fmt: skip
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_warmup_then_cosine_per_step():
    kw = dict(total_steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-5, warmup_lr=1e-6)
    assert warmup_cosine(0, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(5, **kw) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert warmup_cosine(10, **kw) == pytest.approx(1e-3)
    assert warmup_cosine(60, **kw) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 50 / 99)))
    assert warmup_cosine(109, **kw) == pytest.approx(1e-5)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    schedule = WarmupCosine(optimizer, **kw)
    for _ in range(10):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    restored = WarmupCosine(optimizer, **kw)
    restored.load_state_dict(schedule.state_dict())
    assert restored.lr() == schedule.lr()


def test_label_smoothing_matches_torch():
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = soft_target_cross_entropy(logits, smooth_one_hot(labels, 5, 0.1))
    assert torch.allclose(loss, F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_mixup_mixes_images_and_targets_with_one_weight():
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets = Mixup(4, mixup_alpha=0.8)(images, labels)
    lam = targets[0, 0].item()
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0), atol=1e-6)
    assert torch.allclose(targets.sum(-1), torch.ones(4))


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    torch.manual_seed(1)
    images, labels = torch.zeros(2, 1, 10, 10), torch.tensor([0, 1])
    images[1] = 1.0
    mixed, targets = Mixup(2, cutmix_alpha=1.0)(images, labels)
    pasted = mixed[0].mean().item()  # the fraction of image 0 replaced by image 1
    assert targets[0, 1].item() == pytest.approx(pasted)
    assert set(mixed.unique().tolist()) <= {0.0, 1.0}


def test_ema_follows_the_model_with_warmup():
    model = nn.Linear(2, 2)
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(model)
    decay = min(0.9, 2 / 11)
    assert torch.allclose(ema.module.weight, decay * before + (1 - decay) * model.weight)
    assert not ema.module.weight.requires_grad


def test_config_from_toml_then_flags(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text("lr = 0.002\nepochs = 3\nmodel_args = {depth = 2}\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--config", str(path), "--epochs", "5", "--amp", "--clip-grad", "1"]))
    assert (config.lr, config.epochs, config.amp, config.clip_grad, config.model_args) == (
        0.002,
        5,
        True,
        1.0,
        {"depth": 2},
    )
    assert TrainConfig.from_file(_write(tmp_path / "again.toml", config.to_toml())) == config


def _write(path, text):
    path.write_text(text)
    return path


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_file(_write(tmp_path / "bad.toml", "learning_rate = 1\n"))
    with pytest.raises(ValueError, match="routing must be"):
        TrainConfig(routing="random")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    differences = config_differences(TrainConfig().to_dict(), TrainConfig(lr=0.5, out="elsewhere").to_dict())
    assert differences == ["lr: checkpoint 0.001, now 0.5"]  # out may change on resume
