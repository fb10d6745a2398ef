"""Datasets for kzoo: built-in offline sets, tensorflow-datasets, image folders and .npz files.

Every source yields numpy arrays; `load` splits them (stratified, seeded) and wraps them in
tf.data pipelines (cache, shuffle, batch, prefetch).
"""

from kzoo.data import sources as _sources  # noqa: F401  (registers the built-in datasets)
from kzoo.data.core import DatasetInfo, Splits, list_datasets, load, load_arrays, register_dataset

__all__ = ["DatasetInfo", "Splits", "list_datasets", "load", "load_arrays", "register_dataset"]
