"""Datasets for kzoo: built-in offline sets, tensorflow-datasets, image folders and .npz files.

`load` returns train/validation/test pipelines behind one contract (`info`, `sample`,
`epochs`, `val`, `test`): the built-in sets and `.npz` files are held in memory and split
(stratified, seeded) as arrays; image folders and tensorflow-datasets stream from disk through
tf.data (`kzoo.data.streaming`), split from their labels alone and cached as `data.cache` says.
"""

from kzoo.data.core import (
           DataSpec,
           Splits,
           list_datasets,
           load,
           load_arrays,
           open_splits,
           register_dataset,
)
from kzoo.data.splits import DatasetInfo, DataSplits
from kzoo.data.streaming import StreamSplits

__all__ = ["DataSpec", "DataSplits", "DatasetInfo", "Splits", "StreamSplits", "list_datasets", "load", "load_arrays",
           "open_splits", "register_dataset"]
