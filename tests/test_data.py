"""Data sources and preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_mnist
from genaudit.data import Preprocess, load_data, stratified_indices
from genaudit.errors import GenauditError


def test_stratified_subsample_keeps_class_proportions_and_is_seeded():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    idx = stratified_indices(len(labels), labels, 100, seed=0)
    assert np.bincount(labels[idx]).tolist() == [60, 30, 10]
    assert np.array_equal(idx, stratified_indices(len(labels), labels, 100, seed=0))
    assert not np.array_equal(idx, stratified_indices(len(labels), labels, 100, seed=1))
    assert len(np.unique(stratified_indices(len(labels), labels, 7, seed=0))) == 7


def test_npz_layouts_become_nchw(tmp_path):
    x = np.arange(2 * 5 * 5 * 3, dtype=np.uint8).reshape(2, 5, 5, 3)
    np.savez(tmp_path / "nhwc.npz", x=x)
    data = load_data(str(tmp_path / "nhwc.npz"))
    assert data.x.shape == (2, 3, 5, 5) and data.y is None
    assert data.x[1, 2, 4, 0] == x[1, 4, 0, 2]
    np.savez(tmp_path / "gray.npz", x=x[..., 0], y=np.array([0, 1]))
    assert load_data(str(tmp_path / "gray.npz")).x.shape == (2, 1, 5, 5)


def test_preprocessing_scales_converts_resizes_and_normalizes():
    x = np.full((2, 1, 4, 4), 255, np.uint8)
    out = Preprocess(channels=3, resize=(8, 8), mean=(0.5,), std=(0.25,))(x)
    assert out.shape == (2, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out, (1.0 - 0.5) / 0.25, atol=1e-5)
    rgb = np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 0.0, 0.0)])[None]
    np.testing.assert_allclose(Preprocess(channels=1)(rgb), 0.299, atol=1e-6)


@pytest.mark.parametrize("preset, pixel, expected", [
    ("unit", 51, 0.2),                                   # 51/255
    ("raw", 51, 51.0),                                   # as stored
    ("center", 51, (0.2 - 0.5) / 0.5),
    ("mnist", 51, (0.2 - 0.1307) / 0.3081),
])
def test_presets_scale_then_normalize(preset, pixel, expected):
    x = np.full((1, 1, 2, 2), pixel, np.uint8)
    np.testing.assert_allclose(Preprocess.from_preset(preset)(x), expected, rtol=1e-5)


def test_preset_values_are_overridden_by_explicit_ones_and_recorded():
    rgb = np.zeros((1, 3, 2, 2), np.uint8)
    rgb[:, 1] = 255
    imagenet = Preprocess.from_preset("imagenet")
    np.testing.assert_allclose(imagenet(rgb)[0, :, 0, 0], [-0.485 / 0.229, (1 - 0.456) / 0.224, -0.406 / 0.225],
                               rtol=1e-5)
    custom = Preprocess.from_preset("imagenet", std=(1.0,), scale=2.0)
    np.testing.assert_allclose(custom(rgb)[0, :, 0, 0], [-0.485, 510 - 0.456, -0.406], rtol=1e-5)
    assert custom.describe(np.dtype(np.uint8))["scale"] == 2.0 and custom.describe()["preset"] == "imagenet"
    assert Preprocess().describe(np.dtype(np.uint8))["scale"] == pytest.approx(1 / 255)
    assert Preprocess().describe(np.dtype(np.float32))["scale"] == 1.0
    with pytest.raises(GenauditError, match="preset 'imagenet'.*3 values.*1 channel.*--channels"):
        load_data("sample", samples=10, preprocess=Preprocess.from_preset("imagenet"))
    with pytest.raises(GenauditError, match="--preprocess must be one of unit, raw"):
        Preprocess.from_preset("tensorflow")
    with pytest.raises(GenauditError, match="--scale must be a positive"):
        load_data("sample", samples=10, preprocess=Preprocess(scale=0.0))


def test_the_shipped_sample_loads_offline():
    data = load_data("sample", samples=100, seed=0)
    assert data.x.shape == (100, 1, 28, 28) and data.x.dtype == np.uint8
    assert np.bincount(data.y).tolist() == [10] * 10


def test_named_set_is_read_from_the_cache_folder(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (30, 28, 28)), np.arange(30) % 10
    write_mnist(tmp_path / "MNIST" / "raw", images, labels)
    data = load_data("mnist", data_dir=tmp_path, samples=None)
    assert data.x.shape == (30, 1, 28, 28)
    assert np.array_equal(data.x[:, 0], images) and np.array_equal(data.y, labels)


def test_named_set_offline_without_cache_says_where_to_put_files(tmp_path):
    with pytest.raises(GenauditError, match=r"not in the cache.*--data-dir"):
        load_data("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p / "d.npz", images=np.zeros((2, 4))), "no array named 'x'"),
    (lambda p: np.savez(p / "d.npz", x=np.zeros((0, 1, 4, 4))), "holds no samples"),
    (lambda p: np.savez(p / "d.npz", x=np.zeros((3, 1, 4, 4)), y=np.zeros(2)), "must match"),
    (lambda p: (p / "d.npz").write_bytes(b"not a zip"), "could not be read"),
])
def test_bad_npz_files_are_explained(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(GenauditError, match=message):
        load_data(str(tmp_path / "d.npz"))


def test_image_folder_layout(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_data(str(tmp_path))
    assert data.x.shape == (6, 3, 6, 6) and data.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_an_image_folder_decodes_only_the_samples_drawn(tmp_path, monkeypatch):
    from PIL import Image

    for cls in range(4):
        (tmp_path / f"c{cls}").mkdir()
        for i in range(25):
            Image.fromarray(np.full((5, 5), 10 * cls + i, np.uint8)).save(tmp_path / f"c{cls}" / f"{i}.png")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    data = load_data(str(tmp_path), samples=8, seed=0)
    assert data.x.shape == (8, 3, 5, 5) and np.bincount(data.y).tolist() == [2, 2, 2, 2]  # RGB, as torchvision
    assert len(opened) == 1 + 8  # the first image (for the shape), then only the 8 drawn of 100
    for image, label in zip(data.x[:, 0, 0, 0], data.y):
        assert 10 * label <= image < 10 * label + 25  # each image came from its own class folder


def test_an_image_folder_of_mixed_sizes_and_modes_needs_and_takes_resize(tmp_path):
    from PIL import Image

    for cls, (size, mode) in enumerate([((6, 8), "L"), ((10, 12), "RGB")]):
        (tmp_path / f"c{cls}").mkdir()
        for i in range(3):
            Image.new(mode, size, 200 if mode == "L" else (200, 200, 200)).save(tmp_path / f"c{cls}" / f"{i}.png")
    with pytest.raises(GenauditError, match=r"different sizes.*--resize H,W"):
        load_data(str(tmp_path))
    data = load_data(str(tmp_path), preprocess=Preprocess(resize=(4, 4)))
    assert data.x.shape == (6, 3, 4, 4) and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x.min() == 200 == data.x.max()  # grayscale became RGB; resizing a flat image keeps its value
    assert next(data.batches(6)).shape == (6, 3, 4, 4)


def test_an_image_folder_is_listed_as_torchvision_lists_it(tmp_path):
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    from genaudit.data.sources import IMAGE_EXTENSIONS, load_folder

    for rel in ("b/z.png", "b/sub/a.JPG", "b/sub/deeper/c.webp", "a/1.bmp", "a/notes.txt", "c/x.jpeg", "c/y.gif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt") or rel.endswith(".gif"):
            (tmp_path / rel).write_text("not read")
        else:
            Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / rel, format="PNG")  # content is irrelevant here
    images, labels = load_folder(tmp_path)
    expected = make_dataset(str(tmp_path), find_classes(str(tmp_path))[1], extensions=IMG_EXTENSIONS)
    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS
    assert [(Path(f), int(c)) for f, c in zip(images.files, labels)] == [(Path(f), c) for f, c in expected]
    assert labels.tolist() == [0, 1, 1, 1, 2]
    (tmp_path / "d").mkdir()
    with pytest.raises(GenauditError, match="no images in d"):
        load_folder(tmp_path)
