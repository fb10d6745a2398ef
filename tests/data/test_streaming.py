"""Streamed sources: image folders and tfds read through tf.data, split from labels alone,
shuffled per epoch from (seed, epoch) only, and the same batches whatever the cache."""

import math
import os
import shutil

import numpy as np
import pytest

from kzoo import data
from kzoo.data.streaming import StreamSplits
from kzoo.errors import DataError


def _folder(root, per_class=10, classes=("cat", "dog", "eel"), size=(14, 10), seed=0):
    import keras

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            keras.utils.save_img(root / name / f"{i}.jpg", rng.integers(0, 255, (*size, 3)).astype("uint8"))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("stream") / "photos")


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))


def test_folder_streams_the_split_load_arrays_makes(photos):
    arrays = data.load_arrays(str(photos), image_size=[8, 8])
    splits = data.load(str(photos), image_size=[8, 8], batch_size=4, cache="none")
    assert isinstance(splits, StreamSplits) and splits.cache == "none"
    assert splits.info == arrays.info
    x, y = splits.sample(7)
    np.testing.assert_array_equal(x, arrays.x_train[:7])
    np.testing.assert_array_equal(y, arrays.y_train[:7])
    for ds, x_ref, y_ref in ((splits.val, arrays.x_val, arrays.y_val), (splits.test, arrays.x_test, arrays.y_test)):
        got = _batches(ds)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x_ref)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y_ref)


def test_epochs_depend_only_on_seed_and_epoch_and_never_straddle(photos):
    splits = data.load(str(photos), image_size=[8, 8], cache="none")
    n, batch = splits.info.num_train, 5
    steps = math.ceil(n / batch)
    whole = _batches(splits.epochs(batch, seed=3, epochs=3))
    assert len(whole) == 3 * steps
    assert [len(b[1]) for b in whole[:steps]] == [batch] * (steps - 1) + [n - batch * (steps - 1)]
    resumed = _batches(splits.epochs(batch, seed=3, epochs=3, initial_epoch=2))
    assert _same(resumed, whole[2 * steps:])  # a run resumed at epoch 2 sees the same batches
    reference = np.sort(data.load_arrays(str(photos), image_size=[8, 8]).y_train)
    epoch_labels = [np.concatenate([b[1] for b in whole[e * steps:(e + 1) * steps]]) for e in range(3)]
    assert all(np.array_equal(np.sort(labels), reference) for labels in epoch_labels)  # each epoch: all once
    assert not np.array_equal(epoch_labels[0], epoch_labels[1])
    other_seed = _batches(splits.epochs(batch, seed=4, epochs=1))
    assert not _same(other_seed, whole[:steps])


def test_cache_modes_give_the_same_batches(photos, tmp_path):
    runs = {}
    for mode in ("none", "memory", "disk"):
        splits = data.load(str(photos), image_size=[8, 8], cache=mode, cache_dir=str(tmp_path / "run"))
        assert splits.cache == mode
        runs[mode] = (_batches(splits.epochs(6, seed=1, epochs=2)), _batches(splits.test))
    assert _same(runs["memory"][0], runs["none"][0]) and _same(runs["disk"][0], runs["none"][0])
    assert _same(runs["memory"][1], runs["none"][1]) and _same(runs["disk"][1], runs["none"][1])
    assert len(os.listdir(tmp_path / "run" / "data-cache")) == 3  # train, val, test


def test_disk_and_memory_caches_do_not_read_the_files_again(tmp_path):
    root = _folder(tmp_path / "photos", per_class=6)
    disk = data.load(str(root), image_size=[8, 8], cache="disk", cache_dir=str(tmp_path / "run"))
    memory = data.load(str(root), image_size=[8, 8], cache="memory")
    first = _batches(memory.epochs(4, seed=0, epochs=1))
    _batches(memory.test)
    shutil.rmtree(root)
    assert _same(_batches(disk.epochs(4, seed=0, epochs=1)), first)
    assert _same(_batches(memory.epochs(4, seed=0, epochs=2, initial_epoch=1)),
                 _batches(disk.epochs(4, seed=0, epochs=2, initial_epoch=1)))
    assert len(_batches(memory.test)) == len(_batches(disk.test))


def test_auto_cache_keeps_small_images_in_memory_within_the_budget(photos, tmp_path, monkeypatch):
    from kzoo.data import streaming

    assert data.load(str(photos), image_size=[8, 8]).cache == "memory"
    assert data.load(str(photos), image_size=[160, 160], cache=True).cache == "none"  # 76,800 values each
    monkeypatch.setattr(streaming, "memory_budget", lambda: 10000)  # 30 uint8 images of 192 bytes fit
    splits = data.load(str(photos), image_size=[8, 8])
    assert splits.cache == "memory" and splits.train.element_spec[0].dtype.name == "uint8"
    monkeypatch.setattr(streaming, "memory_budget", lambda: 1000)  # they do not fit in 1,000 bytes
    assert data.load(str(photos), image_size=[8, 8], cache_dir=str(tmp_path)).cache == "none"
    assert not (tmp_path / "data-cache").exists()  # disk only when asked for
    with pytest.raises(DataError, match=r"data.cache must be one of auto, memory, disk, none.*Received: cache='ram'"):
        data.load(str(photos), cache="ram")


def test_streamed_folder_with_bad_files_warns_once_and_refuses_empty_class(tmp_path):
    root = _folder(tmp_path / "photos", per_class=5)
    (root / "cat" / "garbage.jpg").write_bytes(b"not an image")
    (root / "dog" / "cut.jpg").write_bytes((root / "dog" / "0.jpg").read_bytes()[:300])  # truncated
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\)") as record:
        splits = data.load(str(root), image_size=[8, 8])
    assert len([w for w in record if "skipped" in str(w.message)]) == 1
    assert splits.info.skipped_files == 2 and splits.info.num_train + splits.info.num_val + splits.info.num_test == 15
    assert sum(len(b[1]) for b in _batches(splits.epochs(4, epochs=1))) == splits.info.num_train
    (root / "fox").mkdir()
    with pytest.raises(DataError, match=r"Class folder .*fox holds no readable image") as info:
        data.load(str(root), image_size=[8, 8])
    assert "\n" not in str(info.value)


def test_frame_keeps_the_same_few_labels_in_memory_and_streamed(photos):
    from types import SimpleNamespace

    from kzoo.data.framing import few_label_positions, frame

    ft = SimpleNamespace(pixel_max=1.0, resize=[6, 6], pad=1, labels_per_class=3)
    digits = data.load("digits")
    framed = frame(digits, ft, seed=2)
    keep = few_label_positions(digits.arrays.y_train, 3, seed=2)
    np.testing.assert_array_equal(framed.arrays.x_train, digits.arrays.x_train[keep])
    np.testing.assert_array_equal(framed.arrays.x_test, digits.arrays.x_test)  # tested on the whole split
    assert framed.info.input_shape == (8, 8, 1) and framed.info.num_train == 30
    assert np.bincount(framed.arrays.y_train).tolist() == [3] * 10

    plain = data.load(str(photos), image_size=[8, 8], cache="none")
    streamed = frame(plain, ft, seed=2)
    expected = data.load_arrays(str(photos), image_size=[8, 8])
    keep = few_label_positions(expected.y_train, 3, seed=2)
    assert isinstance(streamed, StreamSplits) and streamed.info.input_shape == (8, 8, 3)
    assert streamed.info.num_train == len(keep) == 9
    x, y = streamed.sample(100)
    np.testing.assert_array_equal(x, expected.x_train[keep])
    np.testing.assert_array_equal(y, expected.y_train[keep])
    test_x = np.concatenate([b[0] for b in _batches(streamed.test)])
    np.testing.assert_array_equal(test_x, expected.x_test)
    epoch = np.concatenate([b[1] for b in _batches(streamed.epochs(4, seed=0, epochs=1))])
    np.testing.assert_array_equal(np.sort(epoch), np.sort(expected.y_train[keep]))


def test_framing_layer_scales_resizes_and_pads_in_float32():
    from types import SimpleNamespace

    import tensorflow as tf

    from kzoo.data.framing import framing_layer
    from kzoo.zoo.layers import Framing

    x = data.load_arrays("digits").x_test[:7]
    layer = framing_layer(SimpleNamespace(pixel_max=255.0, resize=[20, 20], pad=4), peak=16.0)
    out = np.asarray(layer(x))
    reference = np.pad(tf.image.resize(x * (255.0 / 16.0), (20, 20), method="bilinear").numpy(),
                       [(0, 0), (4, 4), (4, 4), (0, 0)])
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-4)
    assert out.dtype == np.float32 and out.shape == (7, 28, 28, 1)
    assert not out[:, :4].any() and not out[:, :, -4:].any()  # the 4-pixel empty frame
    again = Framing.from_config(layer.get_config())
    np.testing.assert_array_equal(np.asarray(again(x)), out)
    assert framing_layer(SimpleNamespace(pixel_max=0.0, resize=[], pad=0)) is None



def test_tfds_streams_without_materialising_the_split(tmp_path, monkeypatch):
    import keras
    import tensorflow_datasets as tfds

    from kzoo.data import sources

    monkeypatch.setattr(sources, "can_download", lambda builder, timeout=3.0: True)

    def refuse(self):
        raise AssertionError("a streamed split was turned into arrays")

    monkeypatch.setattr(StreamSplits, "to_arrays", refuse)
    with tfds.testing.mock_data(num_examples=40):
        splits = data.load("mnist", data_dir=str(tmp_path), batch_size=8, cache="none")
        assert isinstance(splits, StreamSplits) and splits.info.source == "tfds"
        assert (splits.info.num_train, splits.info.num_val, splits.info.num_test) == (36, 4, 40)
        assert splits.info.input_shape == (28, 28, 1) and splits.info.num_classes == 10
        first = _batches(splits.epochs(8, seed=0, epochs=2))
        assert _same(_batches(splits.epochs(8, seed=0, epochs=2, initial_epoch=1)), first[5:])
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(splits.epochs(8, seed=0, epochs=2), steps_per_epoch=5, epochs=2,
                            validation_data=splits.val, shuffle=False, verbose=0)
        assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()


def test_preprocessing_statistics_come_from_a_bounded_sample(photos):
    from kzoo.data.preprocessing import fit_preprocessing_layers, preprocessing_layers

    splits = data.load(str(photos), image_size=[8, 8], cache="none")
    x = splits.sample(15)[0]
    exact = fit_preprocessing_layers(splits, "per_channel", max_examples=15)
    reference = preprocessing_layers(x, "per_channel")
    np.testing.assert_array_equal(np.asarray(exact[0].input_mean), np.asarray(reference[0].input_mean))
    # too large for the byte budget: accumulated in batches, the same statistics to rounding
    batched = fit_preprocessing_layers(splits, "per_channel", max_examples=15, max_bytes=100)
    np.testing.assert_allclose(np.asarray(batched[0].input_mean), np.asarray(reference[0].input_mean), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(batched[0].input_variance), np.asarray(reference[0].input_variance), rtol=1e-4)
    assert len(fit_preprocessing_layers(data.load("digits"), "scale")) == 1


def test_stratified_split_is_seeded_proportional_and_keeps_every_class():
    from kzoo.data.core import stratified_split

    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert len(held) == math.ceil(0.2 * 100) and len(kept) == 80
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))
    np.testing.assert_array_equal(np.bincount(labels[held], minlength=4), [10, 6, 3, 1])  # 20% of each
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[0], kept) and np.array_equal(again[1], held)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], held)
    assert len(set(labels[kept[:20]].tolist())) > 1  # a split's first examples are not one class
    # a class of 2 with a large fraction still keeps one example
    small = np.array([0] * 10 + [1] * 2)
    kept, held = stratified_split(small, 0.7, seed=0)
    assert 1 in small[kept].tolist() and len(held) == 9
    with pytest.raises(DataError, match="too few to hold out"):
        stratified_split(np.array([0, 1]), 0.6, seed=0)  # ceil(1.2) = 2: nothing left to keep


def test_decoder_keeps_uint8_pixels_and_rounds_resized_ones(tmp_path):
    import tensorflow as tf

    from kzoo.data.images import decoder, image_header

    rng = np.random.default_rng(0)
    for name, shape in (("rgb.jpg", (30, 17, 3)), ("gray.png", (9, 12, 1)), ("rgba.png", (20, 20, 4))):
        pixels = rng.integers(0, 255, shape).astype("uint8")
        encoded = tf.io.encode_jpeg(pixels) if name.endswith(".jpg") else tf.io.encode_png(pixels)
        path = str(tmp_path / name)
        tf.io.write_file(path, encoded)
        assert image_header(path)[:2] == shape[:2]
        raw = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        for size in ((8, 8), shape[:2], (41, 23)):
            image, _ = decoder(size, 3)(tf.constant(path), tf.constant(0, tf.int64))
            assert image.dtype == tf.uint8 and tuple(image.shape) == (*size, 3)
            if size == shape[:2]:  # already that size: the decoded pixels themselves
                np.testing.assert_array_equal(image.numpy(), raw.numpy())
            else:  # the float resize, rounded to the nearest grey level
                expected = tf.image.resize(tf.cast(raw, tf.float32), size).numpy()
                np.testing.assert_array_equal(image.numpy(), np.clip(np.round(expected), 0, 255))


def test_jpeg_header_past_the_first_read(tmp_path):
    import tensorflow as tf

    from kzoo.data.images import image_header

    jpeg = tf.io.encode_jpeg(np.full((7, 5, 3), 90, "uint8")).numpy()
    comment = b"\xff\xfe" + (20002).to_bytes(2, "big") + bytes(20000)  # a 20 KB segment before the frame
    for fill in (0, 40):  # and fill bytes before the next marker
        data = jpeg[:2] + comment + b"\xff" * fill + jpeg[2:]
        (tmp_path / "big.jpg").write_bytes(data)
        assert image_header(str(tmp_path / "big.jpg")) == (7, 5, True)
        (tmp_path / "big.jpg").write_bytes(data[:-100])  # cut: no end marker
        assert image_header(str(tmp_path / "big.jpg")) is None
        (tmp_path / "big.jpg").write_bytes(data[:20010])  # cut inside the long segment
        assert image_header(str(tmp_path / "big.jpg")) is None


def test_jpeg_end_marker_is_found_before_a_trailer_and_missing_from_a_cut_file(tmp_path):
    import tensorflow as tf

    from kzoo.data.images import image_header

    rng = np.random.default_rng(1)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 255, (64, 48, 3)).astype("uint8")).numpy()
    cases = {"plain.jpg": jpeg, "trailer.jpg": jpeg + bytes(300),  # a camera's bytes after the end marker
             "cut.jpg": jpeg[:-2], "half.jpg": jpeg[:len(jpeg) // 2]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    assert image_header(str(tmp_path / "plain.jpg")) == (64, 48, True)
    assert image_header(str(tmp_path / "trailer.jpg")) == (64, 48, True)
    assert image_header(str(tmp_path / "cut.jpg")) is None
    assert image_header(str(tmp_path / "half.jpg")) is None


def test_training_and_evaluation_pipelines_run_without_the_autotuner(photos):
    # tf.data's autotuner held fits up until its next optimization time (see data.core.prefetched)
    for splits in (data.load(str(photos), image_size=[8, 8]), data.load("digits")):
        for ds in (splits.epochs(4, seed=0, epochs=2), splits.epochs(4, seed=0, epochs=1), splits.val, splits.test):
            assert ds.options().autotune.enabled is False
