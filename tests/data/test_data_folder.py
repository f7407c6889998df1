"""ImageFolder: decoding, and an error that names the problem for every way a folder can be wrong."""

import numpy as np
import pytest
import torch
from PIL import Image

from bralib.data import ImageFolder, UnreadableImageError, build_datasets, build_loader


def write_image(path, value, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    for split in ("train", "val"):
        for label, name in enumerate(["cat", "dog"]):
            for i in range(3):
                write_image(tmp_path / split / name / f"{i}.png", 40 * label + 10 * i)
    return tmp_path


def test_reads_classes_in_sorted_order_and_decodes(folder):
    dataset = ImageFolder(folder / "train")
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 6
    image, label = dataset[4]  # dog/1.png
    assert label == 1 and image.shape == (3, 20, 12) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full_like(image, 50 / 255))


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")


def test_root_without_class_folders(tmp_path):
    write_image(tmp_path / "loose.png", 0)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolder(tmp_path)


def test_root_is_a_file(tmp_path):
    write_image(tmp_path / "a.png", 0)
    with pytest.raises(NotADirectoryError, match="a.png"):
        ImageFolder(tmp_path / "a.png")


def test_empty_class_folder_is_named(folder):
    (folder / "train" / "emu").mkdir()
    (folder / "train" / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"class folder .*emu.* holds no images"):
        ImageFolder(folder / "train")


def test_unreadable_image_is_named(folder):
    (folder / "train" / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg")
    dataset = ImageFolder(folder / "train")
    broken = [i for i, (path, _) in enumerate(dataset.samples) if path.name == "broken.jpg"][0]
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*broken\.jpg"):
        dataset[broken]


def test_unreadable_image_is_named_through_worker_processes(folder):
    (folder / "train" / "cat" / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    spec = build_datasets(str(folder), image_size=8)
    loader = build_loader(spec.train, batch_size=2, train=False, num_workers=1)
    with pytest.raises(Exception, match=r"zz_truncated\.png"):
        list(loader)


def test_a_damaged_validation_image_is_found_when_the_datasets_are_built(folder):
    (folder / "val" / "cat" / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*zz_truncated\.png"):
        build_datasets(str(folder), image_size=8)


def test_data_that_is_neither_builtin_nor_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in dataset"):
        build_datasets(str(tmp_path / "imagenet"))


def test_train_and_val_must_share_classes(folder):
    write_image(folder / "val" / "emu" / "0.png", 0)
    with pytest.raises(ValueError, match="class folders differ"):
        build_datasets(str(folder))


def test_folder_pipeline_shapes_and_determinism(folder):
    spec = build_datasets(str(folder), image_size=8, randaugment_ops=2)
    assert spec.num_classes == 2
    first = spec.train[(0, 123)][0]
    assert first.shape == (3, 8, 8)
    assert torch.equal(first, spec.train[(0, 123)][0])  # same seed, same augmentation
    assert spec.val[0][0].shape == (3, 8, 8)


def test_too_small_training_set_for_the_batch(folder):
    spec = build_datasets(str(folder), image_size=8)
    with pytest.raises(ValueError, match="too few for batch_size=16"):
        build_loader(spec.train, batch_size=16, train=True)
