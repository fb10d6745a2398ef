"""Dataset registry, splitting and the tf.data pipeline."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import numpy as np

from kzoo.errors import DataError
from kzoo.registry import Registry

DATASETS = Registry("dataset")


def register_dataset(fn=None, **meta):
    """Registers a function `fn(data_dir=None) -> dict` returning arrays and metadata.

    The dict holds `x_train`, `y_train`, optionally `x_test`, `y_test`, and `class_names`.
    """
    return DATASETS.register(fn, **meta)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.list(pattern)


@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    input_shape: tuple
    num_classes: int
    class_names: list = field(default_factory=list)
    num_train: int = 0
    num_val: int = 0
    num_test: int = 0
    source: str = ""
    skipped_files: int = 0  # unreadable files a folder source skipped


@dataclass
class ArraySplits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DatasetInfo


@dataclass
class Splits:
    """Batched train/validation/test datasets of an in-memory source, the arrays they came
    from, and the metadata.

    The contract the training engine reads is `info`, `sample`, `epochs`, `val` and `test`;
    streamed sources (`kzoo.data.streaming.StreamSplits`) implement the same methods without
    holding the arrays. `train` is built on first use: a pipeline made from arrays copies them
    into memory.
    """

    val: object
    test: object
    info: DatasetInfo
    arrays: ArraySplits
    train_options: dict = field(default_factory=dict)
    eval_batch_size: int = 256
    cache: str = "memory"

    @functools.cached_property
    def train(self):
        return make_dataset(self.arrays.x_train, self.arrays.y_train, shuffle=True, **self.train_options)

    def sample(self, n: int = 256):
        """`(x, y)` numpy: the first `n` training examples (float32), for probes, LSUV and
        fitting standardization on a bounded sample."""
        a = self.arrays
        return a.x_train[:n].astype("float32"), a.y_train[:n]

    def epochs(self, batch_size: int, seed: int = 0, epochs: int = 1, initial_epoch: int = 0,
               shuffle_buffer: int = 10000):
        """Training batches for epochs `initial_epoch` to `epochs - 1` (`make_epoch_dataset`)."""
        a = self.arrays
        return make_epoch_dataset(a.x_train, a.y_train, batch_size, seed, epochs, initial_epoch, shuffle_buffer)

    def with_arrays(self, arrays: ArraySplits) -> Splits:
        """These splits' settings over other arrays (framing, fewer labels)."""
        keep = self.cache != "none"
        val = make_dataset(arrays.x_val, arrays.y_val, self.eval_batch_size, cache=keep) if len(arrays.x_val) else None
        test = make_dataset(arrays.x_test, arrays.y_test, self.eval_batch_size, cache=keep)
        return Splits(val, test, arrays.info, arrays, dict(self.train_options), self.eval_batch_size, self.cache)


STREAMED = ("folder", "tfds")


def _resolve_source(name: str):
    """`(loader, display name, source)` for a registered name, or `(target, display name,
    source)` for a streamed source (`folder` path or `tfds` name); `.npz` files load arrays."""
    from kzoo.data import sources

    if name in DATASETS:
        return DATASETS.get(name), name, "builtin"
    if name.startswith("tfds:"):
        return name[5:], name[5:], "tfds"
    if name.endswith(".npz") or name.startswith("npz:"):
        path = name[4:] if name.startswith("npz:") else name
        return (lambda data_dir=None, **kw: sources.load_npz(path)), os.path.basename(path), "npz"
    if name.startswith("folder:") or os.sep in name or os.path.isdir(name):
        path = name[7:] if name.startswith("folder:") else name
        return path, os.path.basename(os.path.normpath(path)), "folder"
    return name, name, "tfds"


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


def load_arrays(
    name: str = "digits",
    data_dir: str | None = None,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    split_seed: int = 0,
    image_size: tuple | list | None = None,
) -> ArraySplits:
    """Loads a dataset as numpy arrays split into train, validation and test.

    Sources with their own test split keep it; the others hold out `test_split` of all
    examples. `validation_split` is a fraction of all examples, taken from the training part.
    Splits are stratified by class and seeded by `split_seed`, so they are the same on every run.
    """
    for arg, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise DataError(f"data.{arg} must be in [0, 1). Received: {arg}={value}")
    loader, display_name, source = _resolve_source(name)
    if source in STREAMED:  # decoded through the streamed pipeline, then held whole
        return _load_stream(source, loader, display_name, data_dir, validation_split, test_split,
                            split_seed, image_size, cache="none").to_arrays()
    kwargs = {"image_size": tuple(image_size)} if image_size else {}
    raw = loader(data_dir=data_dir, **kwargs)
    class_names = list(raw.get("class_names") or [])
    x = _inputs(name, "x_train", raw["x_train"])
    y = _labels(name, "y_train", raw["y_train"], len(x), len(class_names))
    has_test = "x_test" in raw and raw["x_test"] is not None
    if has_test:
        x_test = _inputs(name, "x_test", raw["x_test"])
        y_test = _labels(name, "y_test", raw["y_test"], len(x_test), len(class_names))
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(
                f"Dataset '{name}': test inputs have shape {x_test.shape[1:]} but training inputs "
                f"{x.shape[1:]}. Received: x_test.shape={x_test.shape}"
            )
    if not len(x):
        raise DataError(f"Dataset '{name}' has no training examples. Received: x_train.shape={x.shape}")
    _check_classes(name, y, y_test if has_test else y[:0], class_names)
    n_total = len(x) + (len(x_test) if has_test else 0)
    if has_test:
        val_fraction = validation_split
    else:
        x, y, x_test, y_test = _stratified_split(x, y, test_split, split_seed)
        # validation_split is a fraction of all examples; rescale it to the remaining part.
        val_fraction = validation_split / (1 - test_split) if test_split < 1 else 0
    x_train, y_train, x_val, y_val = _stratified_split(x, y, val_fraction, split_seed)
    if not len(x_train) or not len(x_test):
        raise DataError(
            f"Dataset '{name}' is too small to split into train, validation and test. "
            f"Received: {n_total} examples"
        )
    num_classes = len(class_names) or int(max(y_train.max(), y_test.max() if len(y_test) else 0) + 1)
    info = DatasetInfo(
        name=display_name,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=num_classes,
        class_names=class_names or [str(i) for i in range(num_classes)],
        num_train=len(x_train),
        num_val=len(x_val),
        num_test=len(x_test),
        source=source,
        skipped_files=int(raw.get("skipped", 0) or 0),
    )
    return ArraySplits(x_train, y_train, x_val, y_val, x_test, y_test, info)


def _inputs(name, key, values):
    """Inputs as a numeric array of at least 2 dimensions, finite everywhere."""
    x = np.asarray(values)
    if x.ndim < 2:
        raise DataError(f"Dataset '{name}': {key} needs one row per example (2 or more dimensions). "
                        f"Received: {key}.shape={x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"Dataset '{name}': {key} must hold numbers. Received: {key}.dtype={x.dtype}")
    if np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.complexfloating):
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"Dataset '{name}': {key} holds {int(bad.sum())} NaN or infinite value(s), "
                            f"the first in row {row}. Received: {key}[{row}] not finite")
    return x[..., None] if x.ndim == 3 else x


def _labels(name, key, values, n, num_class_names):
    """Labels as int64 class indices, one per input row."""
    y = np.asarray(values)
    if y.ndim > 1 and y.shape[1:] == (1,) * (y.ndim - 1):
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"Dataset '{name}': {key} must hold one class index per example. "
                        f"Received: {key}.shape={y.shape}")
    if len(y) != n:
        raise DataError(f"Dataset '{name}': {n} inputs but {len(y)} labels in {key}. Received: len({key})={len(y)}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)) or y.dtype == bool:
        raise DataError(f"Dataset '{name}': {key} must hold integer class indices. Received: {key}.dtype={y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise DataError(f"Dataset '{name}': {key} must hold integer class indices. "
                            f"Received: {key}[{int(np.argmax(bad))}]={y[bad][0]}")
    y = y.astype("int64")
    if len(y) and y.min() < 0:
        raise DataError(f"Dataset '{name}': class indices must be >= 0. Received: {key} min={int(y.min())}")
    if num_class_names and len(y) and y.max() >= num_class_names:
        raise DataError(f"Dataset '{name}': {key} has class {int(y.max())} but only {num_class_names} "
                        f"class names. Received: {key} max={int(y.max())}")
    return y


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


def prefetched(ds):
    """`ds` with two batches prefetched and tf.data's autotuning off (a parallel map's
    `AUTOTUNE` then runs as many calls as the machine has cores).

    The autotuner can hold a fit up: it optimizes
    10 ms, 30 ms, 70 ms, ... (10 ms x (2^k - 1)) after an iterator starts, and with it on, some
    fits over in-memory arrays ended only at one of those times: a ResNet-20 epoch (synthetic
    32x32, 2-core CPU) took 5.10 s in 3 of 8 fits against 2.5 s in the others, with both cores
    idle in between; with it off, 8 of 8 took 2.5-3.2 s. A streamed 1,000-photo folder at
    64x64: one-epoch fits took 0.34 s in 4 of 12 with it on (0.21-0.24 s otherwise), 0.21-0.24 s
    in 12 of 12 with it off.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def make_dataset(x, y, batch_size, shuffle=False, seed=0, cache=True, shuffle_buffer=10000):
    """Wraps arrays in a tf.data pipeline: cache, shuffle (seeded), batch, prefetch (`prefetched`)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, len(x)) or 1, seed=seed, reshuffle_each_iteration=True)
    return prefetched(ds.batch(batch_size))


def make_epoch_dataset(x, y, batch_size, seed=0, epochs=1, initial_epoch=0, shuffle_buffer=10000):
    """Training batches for epochs `initial_epoch` to `epochs - 1`, one after the other.

    Each epoch's order depends only on `(seed, epoch)`, not on how many epochs this process has
    already iterated, so a run resumed at epoch `k` sees the same batches as an uninterrupted
    one. Pass `steps_per_epoch=ceil(len(x) / batch_size)` to `fit`: Keras then keeps one
    iterator across epochs. Batches never straddle two epochs.

    Args:
        x, y: training inputs and labels (numpy).
        batch_size: examples per batch.
        seed: the run's seed. Defaults to `0`.
        epochs: the epoch to stop before. Defaults to `1`.
        initial_epoch: the first epoch to produce. Defaults to `0`.
        shuffle_buffer: shuffle buffer size, capped at `len(x)`. Defaults to `10000`.
    """
    import tensorflow as tf

    base = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
    buffer = max(min(int(shuffle_buffer), len(x)), 1)
    steps = -(-len(x) // batch_size)
    epochs_list = range(int(initial_epoch), int(epochs))
    per_epoch = [
        base.shuffle(buffer, seed=epoch_seed(seed, e), reshuffle_each_iteration=False).batch(batch_size)
        for e in epochs_list
    ]
    if not per_epoch:
        return base.take(0).batch(batch_size)
    # Epoch i's `steps` batches, then epoch i + 1's: a plain sequence, no random choice.
    order = tf.data.Dataset.range(len(per_epoch)).flat_map(
        lambda i: tf.data.Dataset.from_tensors(i).repeat(steps))
    return prefetched(tf.data.Dataset.choose_from_datasets(per_epoch, order))


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a function of the run's seed and the epoch only."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 1) % (2**31 - 1)


def load(
    name: str = "digits",
    batch_size: int = 64,
    data_dir: str | None = None,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    split_seed: int = 0,
    seed: int = 0,
    image_size=None,
    cache: bool | str = "auto",
    shuffle_buffer: int = 10000,
    eval_batch_size: int | None = None,
    cache_dir: str | None = None,
):
    """Loads a dataset as batched train/validation/test `tf.data.Dataset`s.

    Image folders and tensorflow-datasets stream from disk (`kzoo.data.streaming`): nothing
    is decoded until a pipeline runs, and only what the cache mode allows is kept. The
    built-in sets and `.npz` files are held in memory.

    Args:
        name: a registered name (`kzoo list datasets`), any tensorflow-datasets name
            (`mnist`, `cifar10`, ... or `tfds:NAME`), a folder of class sub-folders, or an
            `.npz` file with `x_train, y_train, x_test, y_test`. Defaults to `"digits"`.
        batch_size: examples per batch. Defaults to `64`.
        data_dir: where tensorflow-datasets keeps prepared data. Defaults to tfds's own.
        validation_split: fraction of all examples used for validation. Defaults to `0.1`.
        test_split: fraction held out for testing when the source has no test split.
            Defaults to `0.2`.
        split_seed: seed of the (stratified) split. Defaults to `0`.
        seed: seed of the training shuffle. Defaults to `0`.
        image_size: `[height, width]` images are resized to. Defaults to a folder's `64x64`
            and a tfds dataset's own size.
        cache: `"auto"`, `"memory"`, `"disk"` or `"none"` (`True` is `"auto"`, `False`
            `"none"`); see `kzoo.data.streaming` for the budgets `"auto"` uses. In-memory
            sources only tell whether their pipelines `cache()`. Defaults to `"auto"`.
        shuffle_buffer: examples in a tfds split's (and an in-memory source's) shuffle buffer;
            a folder's epoch shuffles its whole file list. Defaults to `10000`.
        eval_batch_size: batch size of the validation and test pipelines; evaluation keeps no
            gradients, so larger batches are cheaper. Defaults to `4 * batch_size`.
        cache_dir: where `cache="disk"` (or `"auto"`) may write decoded images, such as the
            run folder. Defaults to none (no disk cache).

    Returns:
        A `Splits` (in-memory sources) or `kzoo.data.streaming.StreamSplits` (folders, tfds).

    Example:
        >>> splits = kzoo.data.load("digits", batch_size=32)
        >>> splits.info.input_shape, splits.info.num_classes
        ((8, 8, 1), 10)
        >>> x, y = splits.sample(100)   # numpy, the first 100 training examples
    """
    from kzoo.data.streaming import cache_mode

    if batch_size < 1:
        raise DataError(f"data.batch_size must be at least 1. Received: batch_size={batch_size}")
    mode = cache_mode(cache)
    eval_batch_size = eval_batch_size or 4 * batch_size
    target, display_name, source = _resolve_source(name)
    if source in STREAMED:
        return _load_stream(source, target, display_name, data_dir, validation_split, test_split, split_seed,
                            image_size, mode, cache_dir, batch_size, eval_batch_size, seed, shuffle_buffer)
    arrays = load_arrays(name, data_dir, validation_split, test_split, split_seed, image_size)
    keep = mode != "none"
    val = make_dataset(arrays.x_val, arrays.y_val, eval_batch_size, cache=keep) if len(arrays.x_val) else None
    test = make_dataset(arrays.x_test, arrays.y_test, eval_batch_size, cache=keep)
    train_options = {"batch_size": batch_size, "seed": seed, "cache": keep, "shuffle_buffer": shuffle_buffer}
    return Splits(val, test, arrays.info, arrays, train_options, eval_batch_size, "memory" if keep else "none")


def _load_stream(source, target, display_name, data_dir, validation_split, test_split, split_seed, image_size,
                 cache="auto", cache_dir=None, batch_size=64, eval_batch_size=256, seed=0, shuffle_buffer=10000):
    """A folder or tfds dataset as `StreamSplits` (see `load`)."""
    from kzoo.data import sources, streaming

    mode = streaming.cache_mode(cache)
    for arg, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise DataError(f"data.{arg} must be in [0, 1). Received: {arg}={value}")
    if source == "folder":
        size = tuple(int(d) for d in (image_size or (64, 64)))
        parts, listing = sources.folder_parts(target, size, validation_split, test_split, split_seed)
        class_names, skipped, input_shape = listing.class_names, len(listing.skipped), (*size, listing.channels)
    else:
        parts, class_names, input_shape = sources.tfds_parts(target, data_dir, image_size, validation_split,
                                                             test_split, split_seed, shuffle_buffer)
        skipped = 0
    labels = np.concatenate([p.labels for p in parts.values() if p is not None])
    num_classes = len(class_names) or int(labels.max()) + 1
    info = DatasetInfo(
        name=display_name,
        input_shape=tuple(int(d) for d in input_shape),
        num_classes=num_classes,
        class_names=class_names or [str(i) for i in range(num_classes)],
        num_train=parts["train"].n,
        num_val=parts["val"].n if parts["val"] is not None else 0,
        num_test=parts["test"].n,
        source=source,
        skipped_files=skipped,
    )
    mode = streaming.resolve_cache(mode, list(parts.values()), info.input_shape, parts["train"].dtype.size)
    parts = streaming.apply_cache(mode, parts, cache_dir)
    return streaming.StreamSplits(parts, info, batch_size, eval_batch_size, seed, cache=mode)
