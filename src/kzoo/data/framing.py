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


def few_label_positions(y, per_class, seed=0):
    """Sorted positions of the first `per_class` examples of each class after a seeded shuffle."""
    y = np.asarray(y)
    order = np.random.default_rng(seed).permutation(len(y))
    keep = np.concatenate([order[y[order] == c][:per_class] for c in np.unique(y)])
    keep.sort()
    return keep


def few_labels(x, y, per_class, seed=0):
    """The first `per_class` examples of each class after a seeded shuffle."""
    keep = few_label_positions(y, per_class, seed)
    return x[keep], y[keep]


def prepare_arrays(arrays, ft, seed=0, peak=None):
    """Applies [finetune]'s `pixel_max`, `resize`, `pad` and `labels_per_class` to the splits.

    Args:
        arrays: a `kzoo.data.core.ArraySplits`.
        ft: the recipe's `FinetuneConfig`.
        seed: seed of the labelled examples' choice. Defaults to `0`.
        peak: the largest training pixel `pixel_max` scales from. Defaults to the largest of
            all training images.
    """
    import dataclasses

    scale = 1.0
    if ft.pixel_max:
        peak = (float(np.max(arrays.x_train)) if peak is None else float(peak)) or 1.0
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


SAMPLE_SIZE = 10000


def sample_peak(splits, n: int = SAMPLE_SIZE) -> float:
    """The largest pixel value among the first `n` training examples, read in batches (a
    streamed source is never held whole)."""
    import tensorflow as tf

    if getattr(splits, "parts", None) is None:  # in memory
        return float(np.max(splits.arrays.x_train[:n]))
    part = splits.parts["train"]
    examples = splits._framed(part.uncached().take(int(n))).batch(256)
    return float(examples.reduce(tf.constant(-np.inf, tf.float32),
                                 lambda peak, batch: tf.maximum(peak, tf.cast(tf.reduce_max(batch[0]), tf.float32))))


def frame(splits, ft, seed: int = 0, sample_size: int = SAMPLE_SIZE):
    """Fine-tuning's framing of any `Splits`: pixel scale, resize, pad and labels per class.

    In-memory splits come back as in-memory splits holding `prepare_arrays`' arrays; streamed
    splits (`kzoo.data.streaming.StreamSplits`) get the same steps as tf.data maps after their
    images are read (and cached), and `labels_per_class` keeps the same positions of the
    training split, chosen from its labels.

    Args:
        splits: what `kzoo.data.load` returned.
        ft: the recipe's `FinetuneConfig` (`pixel_max`, `resize`, `pad`, `labels_per_class`).
        seed: seed of the labelled examples' choice (the recipe's `data.split_seed`).
            Defaults to `0`.
        sample_size: `pixel_max` scales by the largest pixel of this many first training
            examples. Defaults to `10000`.

    Returns:
        Splits of the same kind, with `info.input_shape` and `info.num_train` updated.

    Example:
        >>> splits = frame(kzoo.data.load("digits"), recipe.finetune, seed=0)
    """
    import dataclasses

    peak = sample_peak(splits, sample_size) if ft.pixel_max else None
    if getattr(splits, "parts", None) is None:
        return splits.with_arrays(prepare_arrays(splits.arrays, ft, seed, peak))
    import tensorflow as tf

    from kzoo.data.streaming import StreamSplits

    scale = ft.pixel_max / (peak or 1.0) if ft.pixel_max else 1.0
    resize, pad, before = tuple(int(d) for d in ft.resize), int(ft.pad), splits.transform

    def transform(x):
        if before is not None:
            x = before(x)
        if scale != 1.0:
            x = x * scale
        if resize:
            x = tf.image.resize(x, resize, method="bilinear")
        if pad:
            x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]])
        return x

    parts = dict(splits.parts)
    if ft.labels_per_class:
        parts["train"] = parts["train"].subset(few_label_positions(parts["train"].labels, ft.labels_per_class, seed))
    height, width, channels = splits.info.input_shape
    if resize:
        height, width = resize
    info = dataclasses.replace(splits.info, input_shape=(height + 2 * pad, width + 2 * pad, channels),
                               num_train=parts["train"].n)
    return StreamSplits(parts, info, splits.batch_size, splits.eval_batch_size, splits.seed, transform, splits.cache)
