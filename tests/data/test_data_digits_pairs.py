"""digits-pairs: deterministic, disjoint splits, far-apart key digits, a label that is the stated relation."""

import numpy as np
import pytest
import torch

from bralib.data import build_datasets, digits_pairs
from bralib.data.digits_pairs import DigitsPairs, source_digits


def test_deterministic_from_seed():
    a, b, c = DigitsPairs("train", 8, seed=1), DigitsPairs("train", 8, seed=1), DigitsPairs("train", 8, seed=2)
    assert torch.equal(a[5][0], b[5][0]) and a.layout(5) == b.layout(5)
    assert not torch.equal(a[5][0], c[5][0])


def test_train_and_val_use_disjoint_source_digits():
    _, _, train_index = source_digits("train")
    _, _, val_index = source_digits("val")
    assert len(train_index) + len(val_index) == 1797
    assert not set(train_index.tolist()) & set(val_index.tolist())
    val = DigitsPairs("val", 50)
    used = {d.source for i in range(50) for d in (*val.layout(i).keys, *val.layout(i).distractors)}
    assert max(used) < len(val_index)  # indices into the val pool only


@pytest.mark.parametrize("relation", ["partner", "cue", "same", "sum-mod-10"])
def test_label_is_the_relation_between_far_apart_key_digits(relation):
    dataset = DigitsPairs("train", 200, relation=relation)
    labels = []
    for i in range(200):
        layout = dataset.layout(i)
        first, second = layout.keys
        expected = {
            "partner": second.digit,
            "cue": first.digit,
            "same": int(first.digit == second.digit),
            "sum-mod-10": (first.digit + second.digit) % 10,
        }[relation]
        assert layout.label == expected
        assert np.hypot(first.top - second.top, first.left - second.left) >= 32
        assert (first.marked, second.marked) == ((True, False) if relation in ("partner", "cue") else (False, False))
        labels.append(layout.label)
    counts = np.bincount(labels, minlength=dataset.num_classes)
    assert counts.min() > 0.4 * 200 / dataset.num_classes  # no class starved


def _patch(image, digit):
    """The digit's box less its outermost pixels (where a frame clipped by the canvas edge may lie)."""
    return image[:, digit.top + 1 : digit.top + digit.size - 1, digit.left + 1 : digit.left + digit.size - 1]


def _colour(patch):
    """The tint of a digit's bright pixels: their mean RGB over the brightest channel."""
    bright = patch.amax(0) > 0.6
    return patch[:, bright].mean(1) / patch[:, bright].amax(0).mean()


@pytest.mark.parametrize("relation", ["same", "sum-mod-10"])
def test_white_keys_and_tinted_distractors(relation):
    dataset = DigitsPairs("train", 20, strokes=0, relation=relation)
    for index in range(20):
        image, layout = dataset[index][0], dataset.layout(index)
        assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
        for key in layout.keys:
            assert torch.allclose(_colour(_patch(image, key)), torch.ones(3), atol=0.05)  # white
        for distractor in layout.distractors:
            assert (_colour(_patch(image, distractor)).amax() - _colour(_patch(image, distractor)).amin()) > 0.3


def test_partner_shares_the_cues_tint_and_only_the_cue_is_marked():
    dataset = DigitsPairs("val", 30, strokes=0)  # partner is the default
    assert dataset.relation == "partner" and dataset.num_classes == 10
    for index in range(30):
        image, layout = dataset[index][0], dataset.layout(index)
        cue, partner = layout.keys
        assert cue.tint == partner.tint and max(cue.tint) - min(cue.tint) > 0.5  # a colour, not white
        assert torch.allclose(_colour(_patch(image, cue)), _colour(_patch(image, partner)), atol=0.12)
        tints = [d.tint for d in layout.distractors]
        assert cue.tint not in tints and len(set(tints)) == len(tints)  # the partner is the only match
        for digit in layout.keys + layout.distractors:  # a white 2x2 dot up and left of the cue, nowhere else
            top, left = digit.top - 3, digit.left - 3
            dot = image[:, max(top, 0) : top + 2, max(left, 0) : left + 2]
            assert bool((dot == 1.0).all() and dot.numel() == 12) == digit.marked, (index, digit)


def test_cue_and_partner_label_the_same_images():
    partner, cue = DigitsPairs("train", 10, seed=3), DigitsPairs("train", 10, seed=3, relation="cue")
    for index in range(10):
        assert torch.equal(partner.sample(index, 5)[0], cue.sample(index, 5)[0])
        assert cue.layout(index, 5).label == partner.layout(index, 5).keys[0].digit
        assert partner.layout(index, 5).label == partner.layout(index, 5).keys[1].digit


def test_bad_arguments():
    with pytest.raises(ValueError, match="relation must be one of"):
        DigitsPairs(relation="product")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        DigitsPairs("train", 0)
    with pytest.raises(ValueError, match="distractors and strokes must be >= 0"):
        DigitsPairs("train", 4, distractors=-1)
    with pytest.raises(ValueError, match="split must be one of"):
        DigitsPairs("test", 10)
    with pytest.raises(IndexError, match="out of range"):
        DigitsPairs("val", 10)[10]
    with pytest.raises(ValueError, match="image_size=64"):
        build_datasets("digits-pairs", image_size=224)


def test_source_digits_are_sklearns_load_digits():
    from sklearn.datasets import load_digits

    images, labels = digits_pairs.load_sklearn_digits()
    bunch = load_digits()
    assert np.array_equal(labels, bunch.target) and np.allclose(images, bunch.images / 16.0)


def test_missing_scikit_learn_gives_an_install_hint(monkeypatch):
    monkeypatch.setattr(digits_pairs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'bralib\[data\]'"):
        digits_pairs.load_sklearn_digits()


def test_built_in_pipeline():
    spec = build_datasets("digits-pairs", image_size=64, train_size=10, val_size=6)
    assert spec.num_classes == 10 and len(spec.train) == 10 and len(spec.val) == 6
    image, label = spec.train[(0, 7)]
    assert image.shape == (3, 64, 64) and 0 <= label < 10


def test_strokes_are_clutter_on_the_same_layout():
    plain, cluttered = DigitsPairs("train", 4), DigitsPairs("train", 4, strokes=3)
    assert plain.layout(1).strokes == () and len(cluttered.layout(1).strokes) == 3
    assert plain.layout(1).keys == cluttered.layout(1).keys  # strokes are drawn last: the digits stay put
    assert plain.layout(1).distractors == cluttered.layout(1).distractors
    assert (cluttered[1][0] >= plain[1][0] - 1e-6).all() and not torch.equal(cluttered[1][0], plain[1][0])
