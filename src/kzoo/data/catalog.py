"""The dataset catalog: names registered with `register_dataset` (the built-in offline sets)."""

from __future__ import annotations

from kzoo.registry import Registry

DATASETS = Registry("dataset")


def register_dataset(fn=None, **meta):
    """Registers a function `fn(data_dir=None) -> dict` returning arrays and metadata.

    The dict holds `x_train`, `y_train`, optionally `x_test`, `y_test`, and `class_names`.
    """
    return DATASETS.register(fn, **meta)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.list(pattern)
