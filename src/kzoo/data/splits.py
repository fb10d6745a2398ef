"""What every dataset gives the engine: `DatasetInfo`, the `DataSplits` interface both the
in-memory `kzoo.data.core.Splits` and the streamed `kzoo.data.streaming.StreamSplits`
implement, and the tf.data pipelines over arrays."""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field

import numpy as np

from kzoo.data.mixing import Mixing

# TensorFlow is imported inside the functions that build pipelines: importing it costs 5-6 s,
# and `kzoo list`, `kzoo show` and the recipe checks never need it.

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


def prefetched(ds):
    """`ds` with two batches prefetched and tf.data's autotuning off (a parallel map's
    `AUTOTUNE` then runs as many calls as the machine has cores).

    The autotuner can hold a fit up: it re-optimizes on a doubling schedule after an iterator
    starts, and with it on, some fits (over in-memory arrays and over streamed folders alike)
    ended only at one of those optimizations, with both cores idle in between, where with it
    off every fit ran through. (Seen in repeated one-epoch fits on a 2-core CPU; no results
    file holds those timings, so none is given here.)
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


class DataSplits(abc.ABC):
    """The one interface the engine, the evaluation and the export read a dataset through (as
    Keras's trainers read every input kind through a `DataAdapter`): nobody asks which kind of
    splits they hold.

    Attributes:
        info: the `DatasetInfo`.
        batch_size, eval_batch_size, seed: of the training, and the validation/test, pipelines.
        cache: the resolved cache mode (`memory`, `disk` or `none`).
        in_memory: whether the examples are held as arrays (built-in sets, `.npz`).
        val, test: validation batches (`None` without a validation split) and test batches, in
            their splits' fixed order, built once and shared by every stage and evaluation.
    """

    info: DatasetInfo
    batch_size: int
    eval_batch_size: int
    seed: int
    cache: str
    in_memory: bool = False  # whether the examples are held as arrays (reading a sample costs no more)
    mixing: Mixing = Mixing()  # MixUp/CutMix of the training batches; `open_splits` sets the recipe's

    @abc.abstractmethod
    def examples(self, split: str, start: int = 0, stop: int | None = None):
        """Unbatched `(image, label int64)` examples `start` to `stop - 1` of `split` (`train`,
        `val` or `test`) in the split's fixed order, read without filling any cache. Images keep
        the source's dtype (uint8 for image files: the model casts them), as in training."""

    @property
    @abc.abstractmethod
    def train_labels(self) -> np.ndarray:
        """The training split's labels, in its fixed order."""

    @abc.abstractmethod
    def subset_train(self, positions) -> DataSplits:
        """These splits with only the training examples at the sorted `positions`."""

    @abc.abstractmethod
    def worker_shard(self, index: int, count: int, seed: int):
        """Worker `index` of `count`'s training examples for multi-worker training: unbatched,
        repeating, a seeded shuffle shared by every worker so the shards are disjoint."""

    @abc.abstractmethod
    def epochs(self, batch_size: int, seed: int = 0, epochs: int = 1, initial_epoch: int = 0,
               shuffle_buffer: int | None = 10000):
        """Training batches for epochs `initial_epoch` to `epochs - 1`; each epoch's order depends
        only on `(seed, epoch)` and no batch straddles two epochs. With MixUp or CutMix on
        (`mixing`), images are mixed and labels are float32 soft labels `(batch, num_classes)`
        (through `mixed`); validation and test batches keep integer labels."""

    def mixed(self, batches, seed: int, initial_epoch: int, steps_per_epoch: int, stream: int = 0):
        """Training `batches` with the splits' MixUp/CutMix (`kzoo.data.mixing.Mixing`): the one
        place every training path's batches (`epochs`, a multi-worker shard) are mixed. Batch `i`
        must be batch `i % steps_per_epoch` of epoch `initial_epoch + i // steps_per_epoch`; its
        draws depend on `(seed, epoch, batch, stream)` only. Unchanged without mixing."""
        return self.mixing.apply(batches, self.info.num_classes, seed, initial_epoch, steps_per_epoch, stream)

    def count(self, split: str) -> int:
        return {"train": self.info.num_train, "val": self.info.num_val, "test": self.info.num_test}[split]

    def batches(self, split: str, batch_size: int | None = None):
        """`split`'s examples in batches of `batch_size` (the evaluation batch size), in order,
        read as they are needed (`None` for an empty split)."""
        if not self.count(split):
            return None
        return prefetched(self.examples(split).batch(int(batch_size or self.eval_batch_size)))

    def sample(self, n: int = 256):
        """`(x float32, y int64)` numpy: the first `n` training examples, for probes, LSUV and
        statistics fitted on a bounded sample."""
        n = min(int(n), self.info.num_train)
        return self.arrays_of("train", 0, n)

    def arrays_of(self, split: str, start: int = 0, stop: int | None = None):
        """`(x, y)` numpy of examples `start` to `stop - 1` of `split`, read in batches."""
        shape = tuple(self.info.input_shape)
        batches = list(self.examples(split, start, stop).batch(256).as_numpy_iterator())
        if not batches:
            return np.zeros((0, *shape), "float32"), np.zeros((0,), "int64")
        return (np.concatenate([b[0] for b in batches]).astype("float32", copy=False),
                np.concatenate([b[1] for b in batches]).astype("int64", copy=False))

    def peak(self, n: int = 10000) -> float:
        """The largest value among the first `n` training examples, read in batches."""
        import tensorflow as tf

        batches = self.examples("train", 0, int(n)).batch(256)
        return float(batches.reduce(tf.constant(-np.inf, tf.float32),
                                    lambda top, b: tf.maximum(top, tf.reduce_max(tf.cast(b[0], tf.float32)))))

    def to_arrays(self, which=("train", "val", "test")) -> ArraySplits:
        """The splits named in `which` as an `ArraySplits` held in memory; the others empty."""
        out = []
        for split in ("train", "val", "test"):
            if split in which and self.count(split):
                out += self.arrays_of(split)
            else:
                out += [np.zeros((0, *self.info.input_shape), "float32"), np.zeros((0,), "int64")]
        return ArraySplits(*out, self.info)

    @functools.cached_property
    def arrays(self) -> ArraySplits:
        """Every split in memory (`to_arrays`); the engine never reads it for a streamed source."""
        return self.to_arrays()
