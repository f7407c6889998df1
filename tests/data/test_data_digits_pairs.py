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


@pytest.mark.parametrize("relation", ["same", "sum-mod-10"])
def test_label_is_the_relation_between_far_apart_key_digits(relation):
    dataset = DigitsPairs("train", 200, relation=relation)
    labels = []
    for i in range(200):
        layout = dataset.layout(i)
        first, second = layout.keys
        expected = int(first.digit == second.digit) if relation == "same" else (first.digit + second.digit) % 10
        assert layout.label == expected
        assert np.hypot(first.top - second.top, first.left - second.left) >= 32
        labels.append(layout.label)
    counts = np.bincount(labels, minlength=dataset.num_classes)
    assert counts.min() > 0.4 * 200 / dataset.num_classes  # no class starved


def test_images_show_white_keys_and_tinted_distractors():
    dataset = DigitsPairs("train", 20, strokes=0)
    image, _ = dataset[3]
    layout = dataset.layout(3)
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    for key in layout.keys:
        patch = image[:, key.top : key.top + 16, key.left : key.left + 16]
        bright = patch.amax(0) > 0.6
        assert bright.any() and torch.allclose(patch[0][bright], patch[1][bright], atol=0.15)  # grey-white
    for distractor in layout.distractors:
        patch = image[:, distractor.top : distractor.top + 16, distractor.left : distractor.left + 16]
        assert (patch.amax(0) - patch.amin(0)).max() > 0.3  # coloured


def test_bad_arguments():
    with pytest.raises(ValueError, match="relation must be one of"):
        DigitsPairs(relation="product")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        DigitsPairs("train", 0)
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
