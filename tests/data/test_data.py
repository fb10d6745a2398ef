"""Datasets: the offline built-ins, tfds (mocked), folders and .npz files, and the splits."""

import numpy as np
import pytest

from kzoo import data
from kzoo.errors import DataError


def test_digits_split_is_stratified_fixed_and_disjoint():
    a = data.load_arrays("digits")
    b = data.load_arrays("digits")
    assert a.info.input_shape == (8, 8, 1) and a.info.num_classes == 10
    assert (a.info.num_train, a.info.num_val, a.info.num_test) == (1257, 180, 360)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    # every class appears in the test split in proportion (digits has 174-183 per class)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37
    assert a.info.num_train + a.info.num_val + a.info.num_test == 1797


def test_load_returns_batched_pipelines():
    splits = data.load("digits", batch_size=32)
    x, y = next(iter(splits.train))
    assert x.shape == (32, 8, 8, 1) and y.shape == (32,)
    assert sum(int(b[1].shape[0]) for b in splits.test) == 360


def test_mnist_5k_is_real_and_offline():
    a = data.load_arrays("mnist-5k")
    assert a.info.input_shape == (28, 28, 1)
    assert a.info.num_train + a.info.num_val + a.info.num_test == 5000
    assert np.bincount(a.y_test, minlength=10).min() >= 95
    assert a.x_train.max() == 255


def test_tfds_path_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    from kzoo.data import sources

    with tfds.testing.mock_data(num_examples=40):
        original = sources.can_download
        sources.can_download = lambda builder, timeout=3.0: True
        try:
            a = data.load_arrays("mnist", data_dir=str(tmp_path), validation_split=0.1)
        finally:
            sources.can_download = original
    assert a.info.input_shape == (28, 28, 1) and a.info.num_classes == 10
    assert a.info.source == "tfds"
    assert a.info.num_test == 40  # mock data keeps tfds's own test split


def test_can_download_is_false_for_unreachable_host():
    from kzoo.data.sources import can_download

    class Builder:
        url_infos = {"https://kzoo-test.invalid/file.gz": None}

    assert can_download(Builder(), timeout=1.0) is False


def test_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.random((60, 4, 4, 1)), y_train=np.arange(60) % 3,
             x_test=rng.random((12, 4, 4, 1)), y_test=np.arange(12) % 3)
    a = data.load_arrays(str(path), validation_split=0.1)
    assert a.info.num_classes == 3 and a.info.num_test == 12 and a.info.num_val == 6


def test_npz_with_mismatched_lengths_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((10, 4)), y_train=np.zeros(9))
    with pytest.raises(DataError, match="10 rows but y_train has 9"):
        data.load_arrays(str(path))


def test_image_folder(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            keras.utils.save_img(tmp_path / "imgs" / cls / f"{i}.png", rng.integers(0, 255, (12, 10, 3)).astype("uint8"))
    a = data.load_arrays(str(tmp_path / "imgs"), image_size=[8, 8], test_split=0.2, validation_split=0.1)
    assert a.info.class_names == ["cat", "dog"]
    assert a.info.input_shape == (8, 8, 3)
    assert a.info.num_train + a.info.num_val + a.info.num_test == 20


def test_bad_split_fraction():
    with pytest.raises(DataError, match="validation_split"):
        data.load_arrays("digits", validation_split=1.5)
