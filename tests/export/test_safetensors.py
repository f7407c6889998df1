"""safetensors weights: bit-exact round trip, SHA-256 checked on load, strict loading, and ``bralib convert``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import bralib
from bralib.cli import main
from bralib.errors import CheckpointError
from bralib.export.convert import convert_official
from bralib.export.safetensors_io import Preprocess, load_safetensors, load_safetensors_into, save_safetensors
from bralib.models import OfficialWeightsError
from bralib.train import load_trained_model

pytest.importorskip("safetensors")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from official_layout import official_state_dict  # noqa: E402  (tests/models: the released layout, built independently)

NANO_LAYOUT = dict(dims=(32, 64, 128, 160), depths=(1, 1, 2, 1), num_classes=10)  # biformer_nano's shapes


@pytest.fixture
def trained_nano() -> torch.nn.Module:
    """A nano whose every tensor (BatchNorm statistics and counters too) differs from a fresh one."""
    torch.manual_seed(0)
    model = bralib.create_model("biformer_nano", num_classes=10)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(torch.randint_like(tensor, 1, 5) if not tensor.is_floating_point() else torch.rand_like(tensor))
    return model.eval()


def test_round_trip_is_bit_exact_and_rebuilds_the_model(tmp_path, trained_nano):
    path = save_safetensors(trained_nano, tmp_path / "nano.safetensors", class_names=list("abcdefghij"))
    assert (tmp_path / "nano.safetensors.sha256").read_text().endswith("  nano.safetensors\n")
    model, info = load_safetensors(path)
    ours, theirs = trained_nano.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours)
    assert info.architecture == "biformer_nano" and info.class_names == list("abcdefghij")
    assert info.preprocess == Preprocess.of_model(trained_nano) and not model.training
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images), trained_nano(images))


def test_a_changed_file_fails_its_sha256_naming_it(tmp_path, trained_nano):
    path = save_safetensors(trained_nano, tmp_path / "nano.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"nano\.safetensors.*SHA-256"):
        load_safetensors(path)


def test_loading_into_another_architecture_is_strict(tmp_path, trained_nano):
    path = save_safetensors(trained_nano, tmp_path / "nano.safetensors")
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_safetensors_into(bralib.create_model("biformer_nano", num_classes=5), path)
    other = load_safetensors_into(bralib.create_model("biformer_nano", num_classes=10), path)
    assert torch.equal(other.head.weight, trained_nano.head.weight)


def test_convert_official_checkpoint_loads_strictly(tmp_path):
    official = official_state_dict(**NANO_LAYOUT, dtype=torch.float32)
    torch.save({"model": official, "epoch": 300}, tmp_path / "official.pth")
    out = tmp_path / "nano.safetensors"
    argv = ["convert", str(tmp_path / "official.pth"), str(out), "--model", "biformer_nano", "--num-classes", "10"]
    assert main(argv) == 0
    model, info = load_safetensors(out)
    assert torch.equal(model.stem.conv1.weight, official["downsample_layers.0.0.weight"])
    assert torch.equal(model.stages[2].blocks[1].attn.proj.bias, official["stages.2.1.attn.wo.bias"])
    assert info.source.startswith("official biformer_nano")

    del official["stages.1.0.attn.wo.bias"]
    official["extra.weight"] = torch.zeros(1)
    torch.save({"model": official}, tmp_path / "broken.pth")
    with pytest.raises(OfficialWeightsError, match=r"(?s)missing.*stages\.1\.0\.attn\.wo\.bias.*extra\.weight"):
        convert_official(tmp_path / "broken.pth", tmp_path / "broken.safetensors", "biformer_nano",
                                       num_classes=10)  # fmt: skip
    assert not (tmp_path / "broken.safetensors").exists()


def test_convert_training_checkpoint_keeps_classes_and_preprocessing(tmp_path, repo_root, capsys):
    checkpoint = repo_root / "experiments" / "checkpoints" / "biformer_nano_digits.pt"
    out = tmp_path / "digits.safetensors"
    assert main(["convert", str(checkpoint), str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 10
    model, info = load_safetensors(out)
    trained, _, _ = load_trained_model(checkpoint)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    assert info.class_names == [str(d) for d in range(10)]
    assert info.preprocess.size == 64 and info.preprocess.crop_pct is None and info.preprocess.mean[0] == 0.097
