"""Multi-worker training on a streamed image folder: each worker decodes only its shard of the
training files and streams the validation and test batches (`python -m
benchmarks.multiworker_memory` writes the same figures to a results file)."""

import pytest

from benchmarks.multiworker_memory import GROWTH_LIMIT_KB, measure
from tests.tuning.conftest import free_ports


@pytest.mark.slow
def test_multiworker_training_memory_grows_little_with_the_folder(tmp_path):
    """Each worker's peak resident memory, over the whole process and from the start of training
    to the end of the run, grows by less than 50 KB per extra image from 700 to 2,800 64x64 JPEGs
    (decoded into float32 arrays, each image alone is 48 KB)."""
    summary = measure([700, 2800], str(tmp_path), ports=free_ports)
    for run in summary["runs"]:
        workers = run["workers"]
        assert [w["rc"] for w in workers] == [0, 0], [w.get("output") for w in workers]
        assert all(w["num_workers"] == 2 and w["replicas"] == 2 for w in workers)
        assert workers[0]["test_accuracy"] == workers[1]["test_accuracy"] > 0.5  # it learned, identically
    assert max(summary["train_growth_kb_per_image"]) < GROWTH_LIMIT_KB, summary
    assert max(summary["process_growth_kb_per_image"]) < GROWTH_LIMIT_KB, summary


def _first_epoch(splits, seed=3):
    """Both workers' shards of epoch 0, as `(x, y)` numpy each (worker 0 takes the extra one)."""
    n = splits.info.num_train
    return [next(iter(splits.worker_shard(i, 2, seed).take(take).batch(n))) for i, take in ((0, -(-n // 2)), (1, n // 2))]


@pytest.mark.parametrize("source", ["digits", "folder"])
def test_worker_shards_are_disjoint_and_cover_an_epoch(source, tmp_path):
    import numpy as np

    import kzoo
    from benchmarks.multiworker_memory import make_folder

    name = "digits" if source == "digits" else make_folder(60, str(tmp_path / "images"), size=16)
    splits = kzoo.data.load(name, image_size=None if source == "digits" else (16, 16))
    shards = _first_epoch(splits)
    for x, y in shards:
        assert x.dtype == np.float32 and y.dtype == np.int64
    x_all, y_all = splits.to_arrays(("train",)).x_train, splits.to_arrays(("train",)).y_train
    every = [tuple(np.round(row.ravel(), 3)) + (int(label),) for row, label in zip(x_all, y_all)]
    seen = [tuple(np.round(np.asarray(row).ravel(), 3)) + (int(label),)
            for x, y in shards for row, label in zip(x, y)]
    assert sorted(seen) == sorted(every)  # each training example once, on one worker
    again = _first_epoch(splits)  # the same seed gives the same shards
    np.testing.assert_array_equal(np.asarray(again[0][0]), np.asarray(shards[0][0]))
