"""``bralib.create_model`` and ``bralib.list_models``: names, options and their errors."""

from __future__ import annotations

import pytest

import bralib
from bralib.models import MODEL_CONFIGS, count_parameters
from bralib.models.isotropic import ISOTROPIC_CONFIGS


def test_list_models_names_every_variant_and_filters():
    names = bralib.list_models()
    assert names == sorted([*MODEL_CONFIGS, *ISOTROPIC_CONFIGS])
    assert {"biformer_tiny", "biformer_small", "biformer_base", "biformer_nano", "biformer_micro"} <= set(names)
    assert bralib.list_models("table6_*") == [
        "table6_conv_pos",
        "table6_deeper",
        "table6_overlapped_embed",
        "table6_swin_layout",
    ]
    notes = {**MODEL_CONFIGS, **ISOTROPIC_CONFIGS}
    assert all(notes[name].note for name in names)  # every row of the table says what it is for


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError) as info:
        bralib.create_model("biformer_tny")
    message = str(info.value)
    assert "unknown model 'biformer_tny'" in message
    assert all(name in message for name in bralib.list_models())


def test_unknown_options_say_what_is_allowed():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['depht'\]; allowed: .*'depths'"):
        bralib.create_model("biformer_tiny", depht=(1, 1, 1, 1))


def test_pretrained_true_explains_how_to_pass_a_downloaded_file():
    with pytest.raises(ValueError) as info:
        bralib.create_model("biformer_small", pretrained=True)
    message = str(info.value)
    assert "does not download" in message and "BiFormer-S ImageNet-1K checkpoint" in message and "github.com" in message
    assert "pretrained='path/to/biformer_small_in1k.pth'" in message and "load_official_weights" in message
    with pytest.raises(ValueError, match="no official weights exist for 'biformer_nano'"):
        bralib.create_model("biformer_nano", pretrained=True)


def test_options_and_overrides():
    model = bralib.create_model("biformer_nano", num_classes=7, in_chans=1, depths=[2, 1, 1, 1])
    assert model.config.depths == (2, 1, 1, 1)  # lists (from a config file) become tuples
    assert model.head.out_features == 7 and model.stem.conv1.in_channels == 1
    pooled = bralib.create_model("biformer_nano", num_classes=0)
    assert count_parameters(pooled) == count_parameters(bralib.create_model("biformer_nano")) - (160 * 1000 + 1000)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        bralib.create_model("biformer_nano", num_classes=-1)
    with pytest.raises(ValueError, match="depths has 3 entries"):
        bralib.create_model("biformer_nano", depths=(1, 1, 1))
