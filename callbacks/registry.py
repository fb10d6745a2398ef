"""Callbacks by name for recipes' [callbacks] tables.

A builder takes a `RunContext` (the recipe, the run directory, a probe batch) and its own
arguments, and returns a Keras callback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

from kzoo.registry import Registry

CALLBACKS = Registry("callback")


@dataclass
class RunContext:
    """What a callback builder may need from the run."""

    recipe: Any = None
    out_dir: str | None = None
    probe: tuple | None = None  # (x, y) numpy arrays: a fixed training batch
    steps_per_epoch: int = 1
    extras: dict = field(default_factory=dict)


def register_callback(fn=None, **meta):
    """Registers `fn(context, **kwargs) -> keras.callbacks.Callback` under its name."""
    return CALLBACKS.register(fn, **meta)


def callback_defaults(name: str) -> dict:
    params = CALLBACKS.parameters(name, skip=("context",))
    return {k: p.default for k, p in params.items()}


def build_callbacks(specs: dict, context: RunContext) -> list:
    """Builds every callback a recipe's [callbacks] section names, in its order."""
    return [CALLBACKS.get(name)(context, **dict(kwargs)) for name, kwargs in specs.items()]


def list_callbacks(pattern="*"):
    return CALLBACKS.list(pattern)


@register_callback
def early_stopping(context, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                   restore_best_weights: bool = True, start_from_epoch: int = 0):
    """Keras EarlyStopping: stop when `monitor` stops improving; restore the best weights."""
    return keras.callbacks.EarlyStopping(
        monitor=monitor, patience=patience, min_delta=min_delta,
        restore_best_weights=restore_best_weights, start_from_epoch=start_from_epoch)
