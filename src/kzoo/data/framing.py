"""Fine-tuning's framing of a dataset: pixel scale, resize, pad and a few labels per class
(the [finetune] fields `pixel_max`, `resize`, `pad`, `labels_per_class`)."""

from __future__ import annotations

import numpy as np


def frame_images(x, resize=(), pad=0):
    """Resizes images to `resize` = [H, W] (bilinear) and pads `pad` zero pixels on every side.

    `resize=[20, 20], pad=4` puts 8x8 digits in MNIST's framing: MNIST centres each digit in a
    20x20 box inside a 28x28 image.
    """
    if resize:
        import tensorflow as tf

        x = tf.image.resize(x.astype("float32"), tuple(resize), method="bilinear").numpy()
    if pad:
        x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    return x.astype("float32")


def few_labels(x, y, per_class, seed=0):
    """The first `per_class` examples of each class after a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(len(y))
    keep = np.concatenate([order[y[order] == c][:per_class] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def prepare_arrays(arrays, ft, seed=0):
    """Applies [finetune]'s `pixel_max`, `resize`, `pad` and `labels_per_class` to the splits."""
    import dataclasses

    scale = 1.0
    if ft.pixel_max:
        peak = float(np.max(arrays.x_train)) or 1.0
        scale = ft.pixel_max / peak
    out = {}
    for split in ("train", "val", "test"):
        x = getattr(arrays, f"x_{split}")
        if len(x):
            x = frame_images(x * scale, ft.resize, ft.pad)
        out[f"x_{split}"] = x
    x_train, y_train = out["x_train"], arrays.y_train
    if ft.labels_per_class:
        x_train, y_train = few_labels(x_train, y_train, ft.labels_per_class, seed)
    info = dataclasses.replace(arrays.info, input_shape=tuple(int(d) for d in x_train.shape[1:]),
                               num_train=len(x_train))
    return dataclasses.replace(arrays, x_train=x_train, y_train=y_train, x_val=out["x_val"],
                               x_test=out["x_test"], info=info)
