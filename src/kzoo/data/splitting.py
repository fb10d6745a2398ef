"""Choosing the train, validation and test examples: stratified, seeded splits of labels and
arrays, and the checks every source's labels pass."""

from __future__ import annotations

import math

import numpy as np

from kzoo.errors import DataError


def _stratified_split(x, y, fraction, seed):
    """scikit-learn's stratified split of in-memory arrays. The streamed sources use
    `stratified_split` (NumPy, same sizes) instead; the arrays keep this one because the
    published figures of the bundled datasets were measured on its choice of examples."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return x, y, x[:0], y[:0]
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        xa, xb, ya, yb = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:
        try:
            xa, xb, ya, yb = train_test_split(x, y, test_size=fraction, random_state=seed)
        except ValueError:
            raise DataError(f"{len(x)} examples are too few to hold out a fraction of "
                            f"{fraction:.3g}. Received: {len(x)} examples") from None
    return xa, ya, xb, yb


def stratified_split(labels, fraction, seed):
    """Positions `(kept, held_out)` of a seeded, stratified choice of `fraction` of `labels`.

    `ceil(fraction * n)` examples are held out, as `load_arrays`' split counts them. Each class
    gives its share rounded down, and the examples still missing come from the classes with the
    largest remainders (at least one example of each class is kept). When a class has a single
    example, or there are fewer held-out or kept examples than classes, the choice is a plain
    seeded one. Both position arrays come in a seeded random order, so the first examples of a
    split are a sample of all its classes. NumPy only: a streamed source is split before its
    first batch, and importing scikit-learn costs more than splitting.

    Args:
        labels: class labels (any integers).
        fraction: the share to hold out, in `[0, 1)`.
        seed: seed of the choice and of the order.
    """
    labels = np.asarray(labels)
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    if fraction <= 0:
        return order, order[:0]
    held = math.ceil(fraction * n)
    if held >= n:
        raise DataError(f"{n} examples are too few to hold out a fraction of {fraction:.3g}. "
                        f"Received: {n} examples")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if counts.min() < 2 or held < len(counts) or n - held < len(counts):
        out = np.arange(n) < held
    else:
        share = counts * held / n
        quota = np.minimum(np.floor(share).astype("int64"), counts - 1)
        by_remainder = np.argsort(-(share - quota), kind="stable")
        while quota.sum() < held:
            for c in by_remainder:
                if quota.sum() < held and quota[c] < counts[c] - 1:
                    quota[c] += 1
        cls = inverse[order]
        # rank of each shuffled position among the shuffled positions of its class
        grouped = np.argsort(cls, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(n, dtype="int64")
        rank[grouped] = np.arange(n) - starts[cls[grouped]]
        out = rank < quota[cls]
    return order[~out], order[out]


def split_indices(name, y, y_test, validation_split, test_split, split_seed, class_names=()):
    """Positions of the train, validation and test examples, chosen from labels alone
    (`stratified_split`, seeded by `split_seed`), for the streamed sources.

    With a separate test split (`y_test` not `None`), `"test"` is all of it and validation is
    taken from `y`; otherwise test and then validation are held out of `y`. `"train"` and
    `"val"` index `y`, `"test"` indexes `y_test` when given, else `y`; each is in the split's
    order. The sizes are those `load_arrays` gives an in-memory source of the same labels.
    """
    for arg, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise DataError(f"data.{arg} must be in [0, 1). Received: {arg}={value}")
    y = np.asarray(y, dtype="int64")
    if not len(y):
        raise DataError(f"Dataset '{name}' has no training examples. Received: 0 training examples")
    _check_classes(name, y, np.asarray(y_test if y_test is not None else y[:0]), list(class_names))
    index = np.arange(len(y))
    if y_test is not None:
        test, val_fraction = np.arange(len(y_test)), validation_split
    else:
        index, test = stratified_split(y, test_split, split_seed)
        val_fraction = validation_split / (1 - test_split)
    keep, held = stratified_split(y[index], val_fraction, split_seed)
    train, val = index[keep], index[held]
    if not len(train) or not len(test):
        raise DataError(f"Dataset '{name}' is too small to split into train, validation and test. "
                        f"Received: {len(index) + len(test)} examples")
    return {"train": train, "val": val, "test": test}



def _check_classes(name, y, y_test, class_names):
    """At least 2 classes; without class names, training labels must be exactly 0..K-1."""
    if class_names:
        num_classes = len(class_names)
    else:
        num_classes = int(y.max()) + 1 if len(y) else 0
        missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
        if missing:
            raise DataError(
                f"Dataset '{name}': labels must be 0..K-1 with every class in the training data; "
                f"class(es) {missing[:5]} have no example. Received: y_train max={num_classes - 1}"
            )
        if len(y_test) and y_test.max() >= num_classes:
            raise DataError(f"Dataset '{name}': y_test has class {int(y_test.max())}, which y_train lacks. "
                            f"Received: y_test max={int(y_test.max())}")
    if len(np.unique(y)) < 2:
        raise DataError(f"Dataset '{name}' has a single class; a classifier needs at least 2. "
                        f"Received: classes={np.unique(y).tolist()}")
    return num_classes
