"""Loading a dataset: the data specification a recipe fills once (`DataSpec`), the in-memory
sources (built-in sets, `.npz` files) as `Splits`, and `open_splits`, which gives every source
behind the one `kzoo.data.splits.DataSplits` interface."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field

import numpy as np

from kzoo.data import sources, streaming
from kzoo.data.catalog import DATASETS, list_datasets, register_dataset
from kzoo.data.mixing import Mixing
from kzoo.data.splits import (
    ArraySplits,
    DatasetInfo,
    DataSplits,
    epoch_seed,
    make_dataset,
    make_epoch_dataset,
    prefetched,
)
from kzoo.data.splitting import _check_classes, _stratified_split, split_indices, stratified_split
from kzoo.errors import DataError

__all__ = ["ArraySplits", "DATASETS", "DataSpec", "DataSplits", "DatasetInfo", "Splits", "epoch_seed", "list_datasets",
           "load", "load_arrays", "resolve_source", "make_dataset", "make_epoch_dataset", "open_splits", "prefetched", "register_dataset",
           "split_indices", "stratified_split"]


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which examples a run reads and how they are batched, filled from
    a recipe once (`from_recipe`, as timm's `resolve_data_config`) and passed whole to
    `open_splits`, to the sources and to the evaluation, so no caller unpacks the [data] table.

    Args:
        dataset: a registered name, a tensorflow-datasets name, a folder or an `.npz` file.
        batch_size: the global training batch size. Defaults to `64`.
        data_dir: where tensorflow-datasets keeps prepared data. Defaults to tfds's own.
        validation_split, test_split, split_seed: the seeded, stratified split.
        seed: seed of the training shuffle. Defaults to `0`.
        image_size: `(height, width)` images are decoded to (folders, tfds); `None` keeps them.
        cache: `auto`, `memory`, `disk` or `none`. Defaults to `"auto"`.
        shuffle_buffer: examples in a shuffle buffer (tfds, in-memory). Defaults to `10000`.
        eval_batch_size: batch size of validation and test. Defaults to `4 * batch_size`.
        cache_dir: where a disk cache may be written (the run folder). Defaults to none.
        mixup, cutmix: MixUp's and CutMix's alpha for the training batches
            (`kzoo.data.mixing.Mixing`; 0: off). Defaults to `0.0`.
    """

    dataset: str = "digits"
    batch_size: int = 64
    data_dir: str | None = None
    validation_split: float = 0.1
    test_split: float = 0.2
    split_seed: int = 0
    seed: int = 0
    image_size: tuple | None = None
    cache: object = "auto"
    shuffle_buffer: int = 10000
    eval_batch_size: int | None = None
    cache_dir: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0

    @classmethod
    def from_recipe(cls, recipe, batch_size: int | None = None, dataset: str | None = None, **changes) -> DataSpec:
        """The recipe's [data] as a spec; `dataset` replaces the dataset (pretraining's, or
        `kzoo eval --data`) and `changes` any field."""
        d = recipe.data
        spec = cls(dataset=dataset or d.dataset, batch_size=int(batch_size or d.batch_size),
                   data_dir=d.data_dir or None, validation_split=d.validation_split, test_split=d.test_split,
                   split_seed=d.split_seed, seed=recipe.seed,
                   image_size=tuple(d.image_size) if d.image_size else None, cache=d.cache,
                   shuffle_buffer=d.shuffle_buffer, eval_batch_size=d.eval_batch_size or None,
                   mixup=d.augment.mixup, cutmix=d.augment.cutmix)
        return dataclasses.replace(spec, **changes)

    def check(self):
        if self.batch_size < 1:
            raise DataError(f"data.batch_size must be at least 1. Received: batch_size={self.batch_size}")
        for arg in ("validation_split", "test_split"):
            value = getattr(self, arg)
            if not 0 <= value < 1:
                raise DataError(f"data.{arg} must be in [0, 1). Received: {arg}={value}")
        return self


@dataclass
class Splits(DataSplits):
    """Batched train/validation/test datasets of an in-memory source, the arrays they came
    from, and the metadata (the `DataSplits` interface over arrays). `train` is built on first
    use: a pipeline made from arrays copies them into memory.
    """

    val: object
    test: object
    info: DatasetInfo
    arrays: ArraySplits
    train_options: dict = field(default_factory=dict)
    eval_batch_size: int = 256
    cache: str = "memory"
    mixing: Mixing = field(default_factory=Mixing)
    in_memory = True  # a class attribute, not a field

    @property
    def batch_size(self) -> int:
        return int(self.train_options.get("batch_size", 64))

    @property
    def seed(self) -> int:
        return int(self.train_options.get("seed", 0))

    @functools.cached_property
    def train(self):
        return make_dataset(self.arrays.x_train, self.arrays.y_train, shuffle=True, **self.train_options)

    def _xy(self, split):
        return getattr(self.arrays, f"x_{split}"), getattr(self.arrays, f"y_{split}")

    def examples(self, split, start=0, stop=None):
        import tensorflow as tf

        x, y = self._xy(split)
        return tf.data.Dataset.from_tensor_slices((x[start:stop].astype("float32"), y[start:stop]))

    def sample(self, n: int = 256):
        a = self.arrays
        return a.x_train[:n].astype("float32"), a.y_train[:n]

    def arrays_of(self, split, start=0, stop=None):
        x, y = self._xy(split)
        return x[start:stop].astype("float32"), y[start:stop]

    def peak(self, n: int = 10000) -> float:
        return float(np.max(self.arrays.x_train[:n]))

    @property
    def train_labels(self):
        return self.arrays.y_train

    def to_arrays(self, which=("train", "val", "test")):
        return self.arrays

    def epochs(self, batch_size: int, seed: int = 0, epochs: int = 1, initial_epoch: int = 0,
               shuffle_buffer: int | None = 10000):
        """Training batches for epochs `initial_epoch` to `epochs - 1` (`make_epoch_dataset`)."""
        a = self.arrays
        batches = make_epoch_dataset(a.x_train, a.y_train, batch_size, seed, epochs, initial_epoch,
                                     shuffle_buffer or 10000)
        return self.mixed(batches, seed, initial_epoch, -(-len(a.x_train) // int(batch_size)))

    def subset_train(self, positions) -> Splits:
        a = self.arrays
        info = dataclasses.replace(a.info, num_train=len(positions))
        return self.with_arrays(dataclasses.replace(a, x_train=a.x_train[positions], y_train=a.y_train[positions],
                                                    info=info))

    def with_arrays(self, arrays: ArraySplits) -> Splits:
        """These splits' settings over other arrays (fewer labels)."""
        keep = self.cache != "none"
        val = make_dataset(arrays.x_val, arrays.y_val, self.eval_batch_size, cache=keep) if len(arrays.x_val) else None
        test = make_dataset(arrays.x_test, arrays.y_test, self.eval_batch_size, cache=keep)
        return Splits(val, test, arrays.info, arrays, dict(self.train_options), self.eval_batch_size, self.cache,
                      self.mixing)

    def worker_shard(self, index: int, count: int, seed: int):
        """Worker `index` of `count`'s training examples, unbatched `(x float32, y int64)`,
        repeating without end: a shuffle of the training split seeded by `seed` (the same order
        on every worker, so the shards are disjoint, and a new order each repeat), every
        `count`-th example from the `index`-th."""
        import tensorflow as tf

        a = self.arrays
        ds = tf.data.Dataset.from_tensor_slices((a.x_train.astype("float32"), a.y_train))
        ds = ds.shuffle(len(a.x_train), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.shard(count, index)


STREAMED = ("folder", "tfds")


def resolve_source(name: str):
    """`(loader, display name, source)` for a registered name, or `(target, display name,
    source)` for a streamed source (`folder` path or `tfds` name); `.npz` files load arrays."""
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
    spec = DataSpec(name, data_dir=data_dir, validation_split=validation_split, test_split=test_split,
                    split_seed=split_seed, image_size=tuple(image_size) if image_size else None, cache="none")
    return _arrays(spec.check())


def _arrays(spec: DataSpec) -> ArraySplits:
    """The spec's dataset split into arrays (a streamed source decoded whole)."""
    name, split_seed = spec.dataset, spec.split_seed
    validation_split, test_split = spec.validation_split, spec.test_split
    loader, display_name, source = resolve_source(name)
    if source in STREAMED:  # decoded through the streamed pipeline, then held whole
        return _open_stream(spec, source, loader, display_name).to_arrays()
    image_size, data_dir = spec.image_size, spec.data_dir
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
) -> DataSplits:
    """Loads a dataset as batched train/validation/test `tf.data.Dataset`s (`open_splits` of
    the `DataSpec` these arguments make).

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
        A `DataSplits`: `Splits` (in-memory sources) or `kzoo.data.streaming.StreamSplits`.

    Example:
        >>> splits = kzoo.data.load("digits", batch_size=32)
        >>> splits.info.input_shape, splits.info.num_classes
        ((8, 8, 1), 10)
        >>> x, y = splits.sample(100)   # numpy, the first 100 training examples
    """
    return open_splits(DataSpec(name, batch_size, data_dir, validation_split, test_split, split_seed, seed,
                                tuple(image_size) if image_size else None, cache, shuffle_buffer,
                                eval_batch_size, cache_dir))


def open_splits(spec: DataSpec) -> DataSplits:
    """The spec's dataset behind the `DataSplits` interface: streamed for folders and
    tensorflow-datasets, in memory for the built-in sets and `.npz` files."""
    spec.check()
    mode = streaming.cache_mode(spec.cache)
    eval_batch_size = spec.eval_batch_size or 4 * spec.batch_size
    target, display_name, source = resolve_source(spec.dataset)
    if source in STREAMED:
        return _open_stream(dataclasses.replace(spec, cache=mode, eval_batch_size=eval_batch_size), source, target,
                            display_name)
    arrays = _arrays(spec)
    keep = mode != "none"
    val = make_dataset(arrays.x_val, arrays.y_val, eval_batch_size, cache=keep) if len(arrays.x_val) else None
    test = make_dataset(arrays.x_test, arrays.y_test, eval_batch_size, cache=keep)
    train_options = {"batch_size": spec.batch_size, "seed": spec.seed, "cache": keep,
                     "shuffle_buffer": spec.shuffle_buffer}
    mixing = _mixing(spec, arrays.info)
    return Splits(val, test, arrays.info, arrays, train_options, eval_batch_size, "memory" if keep else "none",
                  mixing)


def _mixing(spec: DataSpec, info: DatasetInfo) -> Mixing:
    """The spec's MixUp/CutMix, checked against the dataset's inputs."""
    mixing = Mixing(spec.mixup, spec.cutmix)
    mixing.check(info.input_shape)
    return mixing


def _open_stream(spec: DataSpec, source, target, display_name) -> streaming.StreamSplits:
    """A folder or tfds dataset as `StreamSplits` (see `load`)."""
    mode = streaming.cache_mode(spec.cache)
    if source == "folder":
        size = tuple(int(d) for d in (spec.image_size or (64, 64)))
        parts, listing = sources.folder_parts(target, size, spec)
        class_names, skipped, input_shape = listing.class_names, len(listing.skipped), (*size, listing.channels)
    else:
        parts, class_names, input_shape = sources.tfds_parts(target, spec)
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
    parts = streaming.apply_cache(mode, parts, spec.cache_dir)
    return streaming.StreamSplits(parts, info, spec.batch_size, spec.eval_batch_size or 4 * spec.batch_size,
                                  spec.seed, cache=mode, mixing=_mixing(spec, info))
