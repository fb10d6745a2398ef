"""Malformed datasets are handled as documented or refused with one clear line before training.

Folders are read the way training reads them, through the streamed pipeline (`kzoo.data.load`)."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kzoo.data import load, load_arrays
from kzoo.errors import DataError


def _png(path, height, width, channels, value):
    import tensorflow as tf

    image = np.full((height, width, channels), value, dtype="uint8")
    image[0, 0] = 255 - value  # not constant, so resizing is visible
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())


def _jpeg_bytes(height=6, width=6):
    import tensorflow as tf

    return tf.io.encode_jpeg(np.full((height, width, 3), 90, "uint8")).numpy()


def _folder(root, per_class=3, classes=("cat", "dog"), size=(6, 6), channels=3):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(str(root / name / f"{i}.png"), size[0], size[1], channels, 40 * c + i)
    return root


def _every_example(splits):
    """All images and labels of streamed splits (train, validation and test together)."""
    a = splits.to_arrays()
    return np.concatenate([a.x_train, a.x_val, a.x_test]), np.concatenate([a.y_train, a.y_val, a.y_test])


def test_corrupt_images_are_skipped_with_one_warning_naming_them(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "cat" / "garbage.png").write_bytes(b"not an image at all")
    (root / "dog" / "cut.jpg").write_bytes(_jpeg_bytes()[:40])  # a truncated download
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\)") as record:
        splits = load(str(root), image_size=(6, 6))
    warned = [str(w.message) for w in record if "unreadable" in str(w.message)]
    assert len(warned) == 1 and "garbage.png" in warned[0] and "cut.jpg" in warned[0]
    assert "notes.txt" not in warned[0]
    assert splits.info.skipped_files == 2
    x, y = _every_example(splits)
    assert x.shape == (6, 6, 6, 3)
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_mixed_sizes_are_resized_and_gray_mixed_with_rgb_becomes_rgb(tmp_path):
    import tensorflow as tf

    root = tmp_path / "imgs"
    _png(str(root / "a" / "small_gray.png"), 5, 7, 1, 30)
    _png(str(root / "b" / "rgba.png"), 12, 4, 4, 60)
    colour = np.zeros((20, 16, 3), "uint8") + np.array([90, 140, 200], "uint8")  # R, G and B differ
    (root / "c").mkdir()
    (root / "c" / "big_rgb.png").write_bytes(tf.io.encode_png(colour).numpy())
    splits = load(str(root), image_size=(8, 8), validation_split=0.0, test_split=0.34)
    assert splits.info.input_shape == (8, 8, 3) and splits.info.skipped_files == 0
    x, y = _every_example(splits)
    assert x.shape == (3, 8, 8, 3) and sorted(y.tolist()) == [0, 1, 2]
    gray, rgba, rgb = (x[y == label][0] for label in (0, 1, 2))
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])  # gray copied into R, G and B
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    assert gray.min() == 30 and gray.max() > 30  # the dark corner, resized, kept its value range
    np.testing.assert_allclose(rgb[4, 4], [90, 140, 200])  # colour kept, resized from 20x16
    np.testing.assert_allclose(rgba[4, 2], [60, 60, 60])  # alpha dropped


def test_all_grayscale_folder_keeps_one_channel(tmp_path):
    splits = load(str(_folder(tmp_path / "imgs", channels=1)), image_size=(6, 6))
    assert splits.info.input_shape == (6, 6, 1)
    x, _ = _every_example(splits)
    assert x.shape == (6, 6, 6, 1)


@pytest.mark.parametrize("case, match", [
    ("empty_class", r"Class folder .*empty_class holds no readable image"),
    ("only_corrupt", r"Class folder .*only_corrupt holds no readable image"),
    ("single_class", r"at least 2 classes; found 1"),
    ("test_classes_differ", r"class folders of .*test differ"),
])
def test_unusable_folders_are_refused(tmp_path, case, match):
    root = tmp_path / "imgs"
    if case == "empty_class":
        _folder(root)
        (root / "empty_class").mkdir()
    elif case == "only_corrupt":
        _folder(root)
        (root / "only_corrupt").mkdir()
        (root / "only_corrupt" / "x.png").write_bytes(b"\x89PNG broken")
    elif case == "single_class":
        _folder(root, classes=("cat",))
    else:
        _folder(root / "train")
        _folder(root / "test", classes=("cat", "cow"))
    with pytest.raises(DataError, match=match) as info:
        load(str(root), image_size=(6, 6))
    assert "\n" not in str(info.value)


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def _good(n=40, features=5, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), np.arange(n) % classes


@pytest.mark.parametrize("change, match", [
    (lambda x, y: (x, y[:-3]), r"x_train has 40 rows but y_train has 37"),
    (lambda x, y: (x, y - 1), r"class indices must be >= 0. Received: y_train min=-1"),
    (lambda x, y: (x, y + 1), r"class\(es\) \[0\] have no example"),  # 1-based labels
    (lambda x, y: (x, y + 0.5), r"integer class indices. Received: y_train\[0\]=0.5"),
    (lambda x, y: (np.where(np.arange(40)[:, None] == 7, np.nan, x), y), r"NaN or infinite.*row 7"),
    (lambda x, y: (x, np.zeros_like(y)), r"single class"),
    (lambda x, y: (x[:, 0], y), r"one row per example"),
    (lambda x, y: (x.astype("U3"), y), r"must hold numbers"),
])
def test_malformed_npz_is_refused(tmp_path, change, match):
    x, y = change(*_good())
    with pytest.raises(DataError, match=match) as info:
        load_arrays(_npz(tmp_path, x_train=x, y_train=y))
    assert "\n" not in str(info.value)


def test_npz_test_split_must_match_training(tmp_path):
    x, y = _good()
    with pytest.raises(DataError, match=r"y_test has class 9, which y_train lacks"):
        load_arrays(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:5], y_test=np.full(5, 9)))
    with pytest.raises(DataError, match=r"test inputs have shape \(4,\)"):
        load_arrays(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:5, :4], y_test=y[:5]))
    with pytest.raises(DataError, match=r"x_test has 5 rows but y_test has 4"):
        load_arrays(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:5], y_test=y[:4]))


def test_bad_npz_through_the_cli_starts_no_training(tmp_path, cli):
    x, y = _good()
    path = _npz(tmp_path, x_train=x, y_train=y - 1)
    out = tmp_path / "run"
    code, stdout, err = cli("run", "mlp-digits", "--set", f'data.dataset="{path}"', "--out", out, "--quiet")
    assert code == 2 and err.startswith("kzoo: error: Dataset") and err.count("\n") == 1
    assert "Traceback" not in err and "Epoch" not in stdout
    assert not out.exists()  # refused before the run directory got anything


def test_folder_with_awkward_images_trains_end_to_end(tmp_path, cli):
    root = _folder(tmp_path / "imgs", per_class=6, size=(9, 7))
    _png(str(root / "cat" / "gray.png"), 5, 5, 1, 20)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        code, _, err = cli("run", "mlp-digits", "--set", f'data.dataset="folder:{root}"',
                           "--set", "data.image_size=[8, 8]", "--epochs", 2, "--out", out, "--quiet")
    assert code == 0, err
    assert (out / "metrics.json").exists()


# A property: a clean .npz loads into valid splits; the same data with any one defect is refused
# with one line before a model is built.
DEFECTS = ["none", "nan", "inf", "negative_label", "one_based_labels", "fractional_label", "length", "single_class"]


@st.composite
def npz_arrays(draw):
    n = draw(st.integers(12, 40))
    k = draw(st.integers(2, 4))
    x = draw(hnp.arrays(np.float32, (n, 3), elements=st.floats(-1e3, 1e3, width=32)))
    y = np.asarray(draw(st.permutations(list(np.arange(n) % k))), dtype="int64")
    defect = draw(st.sampled_from(DEFECTS))
    row = draw(st.integers(0, n - 1))
    if defect in ("nan", "inf"):
        x[row, draw(st.integers(0, 2))] = np.nan if defect == "nan" else -np.inf
    elif defect == "negative_label":
        y[row] = -draw(st.integers(1, 5))
    elif defect == "one_based_labels":
        y = y + 1
    elif defect == "fractional_label":
        y = y.astype("float64")
        y[row] += 0.5
    elif defect == "length":
        y = y[:-1]
    elif defect == "single_class":
        y = np.zeros_like(y)
    return x, y, defect


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=npz_arrays())
def test_clean_npz_loads_and_any_defect_is_refused_in_one_line(tmp_path, arrays):
    x, y, defect = arrays
    event(defect)
    path = _npz(tmp_path, x_train=x, y_train=y)
    if defect != "none":
        with pytest.raises(DataError) as info:
            load_arrays(path, validation_split=0.1, test_split=0.2)
        assert "\n" not in str(info.value) and "Received" in str(info.value)
        return
    splits = load_arrays(path, validation_split=0.1, test_split=0.2)
    num_classes = splits.info.num_classes
    assert num_classes == len(np.unique(y))
    for labels in (splits.y_train, splits.y_val, splits.y_test):
        assert labels.min() >= 0 and labels.max() < num_classes
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == len(y)
