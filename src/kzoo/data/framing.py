"""Fine-tuning's framing of a dataset (the [finetune] fields `pixel_max`, `resize`, `pad` and
`labels_per_class`).

The pixel scale, resize and pad are not applied to the data: they are a `Framing` layer at the
front of the model (`framing_layer`), so the trained, saved and exported model takes the raw
images a user has. Only the choice of a few labelled examples per class acts on the data.
"""

from __future__ import annotations

import numpy as np

from kzoo.zoo.layers import Framing

SAMPLE_SIZE = 10000


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


def frame(splits, ft, seed: int = 0):
    """`splits` (any `kzoo.data.splits.DataSplits`) with [finetune]'s `labels_per_class`: the
    same training positions, chosen from the labels alone, for in-memory and streamed sources.

    Args:
        splits: what `kzoo.data.load` returned.
        ft: the recipe's `FinetuneConfig`.
        seed: seed of the labelled examples' choice (the recipe's `data.split_seed`).
            Defaults to `0`.
    """
    if not ft.labels_per_class:
        return splits
    return splits.subset_train(few_label_positions(splits.train_labels, ft.labels_per_class, seed))


def framing_layer(ft, peak: float | None = None):
    """The `Framing` layer [finetune]'s `pixel_max`, `resize` and `pad` describe, or `None`.

    Args:
        ft: the recipe's `FinetuneConfig`.
        peak: the largest training pixel, which `pixel_max` scales from (`DataSplits.peak`).
    """
    if not (ft.pixel_max or ft.resize or ft.pad):
        return None
    scale = ft.pixel_max / (float(peak) or 1.0) if ft.pixel_max else 1.0
    # float32 under any precision policy: a bfloat16 resize would shift the pixels
    return Framing(scale=scale, resize=list(ft.resize), pad=int(ft.pad), dtype="float32", name="preprocess_frame")


def framed_shape(input_shape, layer):
    """The shape of one example after `layer` (a `Framing` or `None`)."""
    if layer is None:
        return tuple(input_shape)
    return tuple(layer.compute_output_shape((None, *input_shape))[1:])


def framed_sample(x, layer, batch: int = 512):
    """`x` (numpy) through `layer`, in batches, as float32 numpy."""
    if layer is None or not len(x):
        return x
    return np.concatenate([np.asarray(layer(x[i:i + batch]), "float32") for i in range(0, len(x), batch)])
