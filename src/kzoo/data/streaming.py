"""Streamed datasets: image folders and tensorflow-datasets read through tf.data, never held
whole in memory unless they fit the cache budget.

Each split is a `Part`: a cheap stream of keys in a fixed order (file paths and labels, or a
tfds split's encoded examples) and a `load` step that turns a key into `(image, label)` in
parallel. A training epoch shuffles the keys with a seed that depends only on the run's seed
and the epoch, then loads them; shuffling is blind to what it shuffles, so the cached and
uncached pipelines give the same batches in the same order.

Caching (`data.cache`):

- `"memory"`: decoded images are kept in memory (tf.data's `cache()`) once read.
- `"disk"`: decoded images are written once, one file each, under the caller's cache folder
  (`<cache_dir>/data-cache/...`, reused by later runs and resumed runs with the same files
  and image size), and read back in the shuffled order.
- `"none"`: every epoch decodes the files again.
- `"auto"` (the default): `"memory"` when the decoded images of all splits (uint8 for image
  files and tfds images: one byte per pixel value) fit `memory_budget()` (1 GiB, or a tenth of
  the machine's memory when that is less) and each image has at most `SMALL_EXAMPLE` pixel
  values (16,384: 32x32 colour or 128x128 gray images, not 224x224 photos), else `"none"`.
  A 224x224 colour image holds 147 KB, so `auto` streams photos to keep memory bounded
  whatever the folder's size; `python -m benchmarks.streaming` measures what a memory cache
  costs and saves on them. Ask for `"memory"` when the decoded images fit, or `"disk"` (which
  pays most when the source photos are much larger than `image_size`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil

import numpy as np

from kzoo.data.mixing import Mixing
from kzoo.data.splits import DataSplits, epoch_seed, prefetched
from kzoo.errors import DataError

# TensorFlow is imported inside the functions that build pipelines (5-6 s to import; opening a
# folder's file list needs none of it).

CACHE_MODES = ("auto", "memory", "disk", "none")
MEMORY_BUDGET = 1 << 30
SMALL_EXAMPLE = 1 << 14  # pixel values per image
_DONE = "complete.json"


def cache_mode(cache) -> str:
    """`data.cache` as one of `CACHE_MODES`; `True` is `"auto"` and `False` is `"none"`."""
    if cache is True or cache is None:
        return "auto"
    if cache is False:
        return "none"
    if isinstance(cache, str) and cache in CACHE_MODES:
        return cache
    raise DataError(f"data.cache must be one of {', '.join(CACHE_MODES)} (or true/false). Received: cache={cache!r}")


def memory_budget() -> int:
    """Bytes of decoded images `cache="auto"` keeps in memory: 1 GiB, or a tenth of the
    machine's physical memory when that is less."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 * MEMORY_BUDGET
    return int(min(MEMORY_BUDGET, physical // 10))


class Part:
    """One split of a streamed dataset.

    Args:
        keys: returns a fresh `tf.data.Dataset` of keys in the split's fixed order.
        load: a map function from a key to `(image, label int64)`; images are uint8 (image
            files, tfds images) or float32.
        labels: the split's labels (int64 numpy), in the same order.
        shuffle_buffer: the shuffle buffer of an epoch; `None` shuffles the whole split.
        fingerprint: identifies the keys and `load`, for the disk cache's folder name: a string,
            or a function returning one (called only when a disk cache needs it: hashing a
            folder's file list costs more than the rest of opening it).
        dtype: the images' dtype, when the source knows it without tracing `load` (which
            saves a trace of a folder's decoder); `None` traces it when first asked.
    """

    def __init__(self, keys, load, labels, shuffle_buffer=None, fingerprint="", memory=False, dtype=None):
        self.keys, self.load = keys, load
        self.labels = np.asarray(labels, dtype="int64")
        self.n = len(self.labels)
        self.shuffle_buffer = shuffle_buffer
        self._fingerprint = fingerprint
        self.memory = memory
        self._dtype = dtype

    @property
    def fingerprint(self) -> str:
        if callable(self._fingerprint):
            self._fingerprint = self._fingerprint()
        return self._fingerprint

    @property
    def dtype(self):
        """The images' `tf.DType`."""
        import tensorflow as tf

        if self._dtype is None:
            self._dtype = self.uncached().element_spec[0].dtype
        return tf.as_dtype(self._dtype)

    def _loaded(self, keys):
        import tensorflow as tf

        return keys.map(self.load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    @functools.cached_property
    def cached(self):
        """The loaded split in its fixed order, kept in memory once read (one per Part, so every
        epoch, stage and evaluation shares it)."""
        return self._loaded(self.keys()).cache()

    def ordered(self):
        """`(image, label)` examples in the split's fixed order."""
        return self.cached if self.memory else self._loaded(self.keys())

    def uncached(self):
        """Like `ordered`, but never fills or reads the memory cache (for partial reads)."""
        return self._loaded(self.keys())

    def shuffled(self, seed, buffer=None):
        """One epoch's examples: the fixed order shuffled with `seed`."""
        buffer = self.n if self.shuffle_buffer is None else (buffer or self.shuffle_buffer)
        buffer = max(min(int(buffer), self.n), 1)
        if self.memory:
            return self.cached.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        return self._loaded(self.keys().shuffle(buffer, seed=seed, reshuffle_each_iteration=False))

    def subset(self, keep):
        """The examples at the sorted positions `keep`, in the same order."""
        import tensorflow as tf

        keep = np.asarray(keep, dtype="int64")
        mask = np.zeros(self.n, dtype=bool)
        mask[keep] = True
        mask_t = tf.constant(mask)
        keys = self.keys

        def subset_keys():
            plain = tf.autograph.experimental.do_not_convert
            return keys().enumerate().filter(plain(lambda i, k: mask_t[i])).map(plain(lambda i, k: k))

        digest = hashlib.sha1(keep.tobytes()).hexdigest()[:12]
        return Part(subset_keys, self.load, self.labels[keep], self.shuffle_buffer,
                    lambda: f"{self.fingerprint}-subset{digest}", self.memory, self._dtype)

    def to_disk(self, folder):
        """This split read from one file per decoded example under `folder` (written on first
        use, in a temporary folder renamed when complete, so a killed run leaves no half cache)."""
        import tensorflow as tf

        spec = self.uncached().element_spec[0]
        final = os.path.join(folder, f"{self.fingerprint}-{spec.dtype.name}")
        if not os.path.isfile(os.path.join(final, _DONE)):
            tmp = f"{final}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            prefix = tf.constant(tmp + os.sep)

            @tf.autograph.experimental.do_not_convert
            def write(i, example):
                name = tf.strings.join([prefix, tf.strings.as_string(i, width=8, fill="0"), ".tensor"])
                tf.io.write_file(name, tf.io.serialize_tensor(example[0]))
                return i

            written = self.uncached().enumerate().map(write, num_parallel_calls=tf.data.AUTOTUNE)
            count = int(written.reduce(np.int64(0), lambda total, _: total + 1))
            if count != self.n:
                shutil.rmtree(tmp, ignore_errors=True)
                raise DataError(f"The data changed while it was cached: {count} examples instead of {self.n}. "
                                f"Received: {final}")
            with open(os.path.join(tmp, _DONE), "w") as f:
                json.dump({"examples": self.n}, f)
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same cache first
                shutil.rmtree(tmp, ignore_errors=True)
        files = np.asarray([os.path.join(final, f"{i:08d}.tensor") for i in range(self.n)])
        labels = self.labels

        def keys():
            return tf.data.Dataset.from_tensor_slices((files, labels))

        @tf.autograph.experimental.do_not_convert
        def load(path, label):
            image = tf.io.parse_tensor(tf.io.read_file(path), spec.dtype)
            image.set_shape(spec.shape)
            return image, label

        return Part(keys, load, labels, self.shuffle_buffer, self.fingerprint, memory=False, dtype=spec.dtype)


class StreamSplits(DataSplits):
    """Train/validation/test splits streamed through tf.data: the `DataSplits` interface
    without holding the arrays.

    Args:
        parts: `{"train": Part, "val": Part or None, "test": Part}`.
        info: the `DatasetInfo`.
        batch_size, eval_batch_size, seed: of `train`, `val` and `test`.
        cache: the resolved cache mode (`memory`, `disk` or `none`).
        mixing: the training batches' MixUp/CutMix (`kzoo.data.mixing.Mixing`). Defaults to none.
    """

    def __init__(self, parts, info, batch_size=64, eval_batch_size=256, seed=0, cache="none", mixing=None):
        self.parts, self.info = parts, info
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.cache = cache
        self.mixing = mixing if mixing is not None else Mixing()

    def _evaluation(self, part):
        if part is None or not part.n:
            return None
        return prefetched(part.ordered().batch(self.eval_batch_size))

    @functools.cached_property
    def val(self):
        return self._evaluation(self.parts.get("val"))

    @functools.cached_property
    def test(self):
        return self._evaluation(self.parts.get("test"))

    @functools.cached_property
    def train(self):
        """Epoch 0's training batches (for callers that fit on one dataset)."""
        return self.epochs(self.batch_size, self.seed, 1, 0)

    def examples(self, split, start=0, stop=None):
        part = self.parts.get(split)
        if part is None:
            part = self.parts["train"].subset([])
        keys = part.keys()
        if start:
            keys = keys.skip(int(start))  # skipped before decoding
        if stop is not None:
            keys = keys.take(int(stop) - int(start))
        return part._loaded(keys)

    @property
    def train_labels(self):
        return self.parts["train"].labels

    def subset_train(self, positions):
        import dataclasses

        parts = {**self.parts, "train": self.parts["train"].subset(positions)}
        info = dataclasses.replace(self.info, num_train=parts["train"].n)
        return StreamSplits(parts, info, self.batch_size, self.eval_batch_size, self.seed, self.cache, self.mixing)

    def epochs(self, batch_size: int, seed: int = 0, epochs: int = 1, initial_epoch: int = 0,
               shuffle_buffer: int | None = None):
        """Training batches for epochs `initial_epoch` to `epochs - 1`; each epoch's order depends
        only on `(seed, epoch)` and no batch straddles two epochs.

        A folder's epoch is a shuffle of its whole file list (`shuffle_buffer` is not needed: the
        buffer holds file names); a tfds split is shuffled with `shuffle_buffer` examples.
        """
        import tensorflow as tf

        part = self.parts["train"]
        # One pipeline per epoch with its own seed (a seed tensor inside flat_map would clash
        # with a global seed set by `keras.utils.set_random_seed`), visited in a fixed order;
        # an epoch's pipeline starts reading only when the one before it is done.
        per_epoch = [part.shuffled(epoch_seed(seed, e), shuffle_buffer).batch(int(batch_size))
                     for e in range(int(initial_epoch), int(epochs))]
        if not per_epoch:
            return part.uncached().take(0).batch(int(batch_size))
        steps = -(-part.n // int(batch_size))
        if len(per_epoch) == 1:
            return self.mixed(prefetched(per_epoch[0]), seed, initial_epoch, steps)
        order = tf.data.Dataset.from_tensor_slices(np.repeat(np.arange(len(per_epoch), dtype="int64"), steps))
        return self.mixed(prefetched(tf.data.Dataset.choose_from_datasets(per_epoch, order)), seed, initial_epoch, steps)

    def worker_shard(self, index: int, count: int, seed: int):
        """Worker `index` of `count`'s training examples, unbatched `(x float32, y int64)`,
        repeating without end: the training keys shuffled with `seed` (the same order on every
        worker, so the shards are disjoint, and a new order each repeat), every `count`-th key
        from the `index`-th, then loaded. Only this worker's share is decoded, and never into the
        memory cache, which would hold the whole split on every worker."""
        import tensorflow as tf

        part = self.parts["train"]
        buffer = part.n if part.shuffle_buffer is None else min(int(part.shuffle_buffer), part.n)
        keys = part.keys().shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True).repeat()
        as_float = tf.autograph.experimental.do_not_convert(lambda x, y: (tf.cast(x, tf.float32), y))
        return part._loaded(keys.shard(count, index)).map(as_float, num_parallel_calls=tf.data.AUTOTUNE)


def resolve_cache(mode, parts, example_shape, itemsize=1):
    """The cache mode `auto` picks for these parts, whose images have `example_shape` and
    `itemsize` bytes per value (see the module docstring)."""
    if mode != "auto":
        return mode
    values = int(np.prod(example_shape))
    total = sum(p.n for p in parts if p is not None) * values * itemsize
    return "memory" if total <= memory_budget() and values <= SMALL_EXAMPLE else "none"


def apply_cache(mode, parts: dict, cache_dir):
    """Parts that read through the chosen cache (`mode` is `memory`, `disk` or `none`)."""
    if mode == "disk":
        if not cache_dir:
            raise DataError("data.cache = \"disk\" needs a cache folder (a run writes it in its run folder). "
                            "Received: cache_dir=None")
        folder = os.path.join(cache_dir, "data-cache")
        os.makedirs(folder, exist_ok=True)
        return {k: (p.to_disk(folder) if p is not None and p.n else p) for k, p in parts.items()}
    for p in parts.values():
        if p is not None:
            p.memory = mode == "memory"
    return parts


def fingerprint(*items) -> str:
    """A short stable hash of JSON-serialisable items (the disk cache's folder names)."""
    return hashlib.sha1(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]
