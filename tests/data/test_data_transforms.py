"""The torch-only transforms and RandAugment: shapes, ranges, seeding, and the reference rules they follow."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from bralib.data import transforms as T
from bralib.data.randaugment import OPS, RandAugment, equalize
from bralib.data.sampler import ShardedSampler


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_resized_crop_box_stays_inside_and_respects_scale():
    for seed in range(50):
        top, left, h, w = T.random_resized_crop_box(40, 60, gen(seed), scale=(0.2, 0.5))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        assert 0.15 <= h * w / 2400 <= 0.55


def test_eval_transform_is_resize_then_center_crop():
    image = torch.rand(3, 300, 400)
    out = T.EvalResizeCrop(224)(image)
    assert out.shape == (3, 224, 224)
    resized = T.resize_shorter(image, 256, "bicubic")
    assert resized.shape == (3, 256, 341)
    assert torch.equal(out, resized[:, 16:240, 58:282])


def test_flip_and_normalize():
    image = torch.rand(3, 4, 5)
    flipped = T.RandomHorizontalFlip(p=1.0)(image, gen())
    assert torch.equal(flipped, image.flip(-1))
    normalized = T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(image)
    assert torch.allclose(normalized, (image - 0.5) / 0.25)


def test_train_pipeline_is_seeded():
    image = torch.rand(3, 50, 70)
    pipeline = T.imagenet_train_transform(32)
    a, b, c = pipeline(image, gen(1)), pipeline(image, gen(1)), pipeline(image, gen(2))
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_randaugment_op_keeps_shape_and_range(name):
    image = torch.rand(3, 24, 20)
    out = OPS[name](image, 0.9, gen())
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1


def test_equalize_matches_pil():
    array = (np.random.default_rng(0).beta(2, 5, size=(16, 16, 3)) * 255).astype(np.uint8)
    expected = np.asarray(ImageOps.equalize(Image.fromarray(array)), dtype=np.float32) / 255
    got = equalize(torch.from_numpy(array).permute(2, 0, 1).float() / 255, 1.0, gen()).permute(1, 2, 0).numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_randaugment_magnitude_is_checked():
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 10\]"):
        RandAugment(2, 11)


def test_sampler_resumes_mid_epoch_and_shards_without_padding():
    full = ShardedSampler(103, seed=3, batch_size=10)
    full.set_epoch(2)
    order = list(full)
    assert len(order) == 100  # drop-last to a multiple of the batch
    resumed = ShardedSampler(103, seed=3, batch_size=10)
    resumed.set_epoch(2, start=40)
    assert list(resumed) == order[40:]
    shards = [ShardedSampler(10, num_replicas=3, rank=r, shuffle=False, drop_last=False) for r in range(3)]
    assert sorted(i for s in shards for i, _ in s) == list(range(10))
