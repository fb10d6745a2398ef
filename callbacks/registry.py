"""Callbacks by name for recipes' [callbacks] tables.

A builder takes a `RunContext` (the recipe, the run directory, a probe batch) and its own
arguments, and returns a Keras callback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import keras

from kzoo.callbacks.activations import ActivationMonitor
from kzoo.callbacks.chance import ChanceCheck, random_backbone_frozen_bn
from kzoo.callbacks.divergence import DivergenceGuard
from kzoo.callbacks.early_stopping import EarlyStopping
from kzoo.callbacks.gradients import GradientMonitor
from kzoo.callbacks.lr_control import ScheduleMomentum
from kzoo.callbacks.mlflow import MlflowLogger, check_tracking
from kzoo.callbacks.plateau import ReduceLROnPlateau
from kzoo.callbacks.tensorboard import TensorBoard
from kzoo.callbacks.update_ratio import UpdateRatioMonitor
from kzoo.errors import RecipeError, UserError
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
    """Builds every callback a recipe's [callbacks] section names, in its order, plus the ones
    its schedule implies (one_cycle's momentum). Callbacks that read the others' epoch logs
    (`runs_last`, e.g. TensorBoard) come after them whatever their place in the recipe. A
    builder's `ValueError` (an argument out of range) is a `RecipeError` naming the callback."""
    built = []
    for name, kwargs in specs.items():
        try:
            built.append(CALLBACKS.get(name)(context, **dict(kwargs)))
        except ValueError as e:
            raise RecipeError(f"callbacks.{name}: {e}") from None
    callbacks = [cb for cb in built if not getattr(cb, "runs_last", False)]
    last = [cb for cb in built if getattr(cb, "runs_last", False)]
    schedule = getattr(context.recipe, "schedule", None) or {}
    if schedule.get("name") == "one_cycle":
        callbacks.append(ScheduleMomentum())
    return callbacks + last


# Callbacks every run, stage and tuner trial gets; a recipe's [callbacks.NAME] table sets
# their arguments (`enabled = false` turns one off).
ALWAYS_ON = ("chance_check",)


def with_always_on(specs: dict) -> dict:
    """A recipe's [callbacks] specs with the always-on callbacks first, where it names none of them."""
    return {**{name: {} for name in ALWAYS_ON}, **specs}


def list_callbacks(pattern="*"):
    return CALLBACKS.list(pattern)


def preflight(recipe):
    """Runs the checks of the recipe's callbacks that need the outside world (a tracking server
    that must answer), before any data is read or any training starts; raises their `UserError`."""
    for name, kwargs in (getattr(recipe, "callbacks", None) or {}).items():
        check = CALLBACKS.meta(name).get("preflight")
        if check is not None:
            check(**{k: v for k, v in kwargs.items() if k != "name"})


def end_of_run(callbacks, status: str, run_dir: str | None = None, metrics: dict | None = None):
    """Tells the callbacks that keep something open over a run (`on_run_end`, an MLflow run)
    that it is over: `status` is `completed`, `pruned` or `failed`; a finished run passes its
    folder and its metrics."""
    for cb in callbacks:
        end = getattr(cb, "on_run_end", None)
        if end is not None:
            end(status, run_dir=run_dir, metrics=metrics)


@register_callback
def early_stopping(context, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                   restore_best_weights: bool = True, start_from_epoch: int = 0):
    """Keras EarlyStopping: stop when `monitor` stops improving; restore the best weights."""
    return EarlyStopping(
        monitor=monitor, patience=patience, min_delta=min_delta,
        restore_best_weights=restore_best_weights, start_from_epoch=start_from_epoch)


def _monitors(context) -> list:
    """The monitors built so far for this run, shared by reference with the divergence guard."""
    return context.extras.setdefault("monitors", [])


def _probe(context, probe_size):
    if context.probe is None:
        raise UserError("This callback needs a probe batch; run it from a recipe, or pass one.")
    x, y = context.probe
    return x[:probe_size], y[:probe_size]


@register_callback
def update_ratio(context, every_n_steps: int = 10, adaptive: bool = False, target: float = 1e-3,
                 band: list = (1e-4, 1e-2), patience: int = 3, tolerance: float = 1.5,
                 max_change: float = 4.0):
    """Update/weight ratio per layer (about 1e-3 is healthy); adaptive mode steers the learning rate."""
    monitor = UpdateRatioMonitor(every_n_steps, adaptive, target, band, patience, tolerance, max_change)
    _monitors(context).append(monitor)
    return monitor


@register_callback
def gradients(context, every_n_steps: int = 100, vanishing: float = 1e-3, exploding: float = 1e3,
              probe_size: int = 64):
    """Per-layer gradient norms on a probe batch; flags vanishing and exploding gradients."""
    monitor = GradientMonitor(_probe(context, probe_size), every_n_steps, vanishing, exploding)
    _monitors(context).append(monitor)
    return monitor


@register_callback
def activations(context, every_n_steps: int = 100, dead_warning: float = 0.5, probe_size: int = 64):
    """Per-layer activation mean/std, dead ReLU and saturated tanh/sigmoid fractions."""
    monitor = ActivationMonitor(_probe(context, probe_size), every_n_steps, dead_warning)
    _monitors(context).append(monitor)
    return monitor


@register_callback
def divergence_guard(context, factor: float = 10.0, min_steps: int = 3, restore_best_weights: bool = True):
    """Stop on a non-finite or exploding loss, restore the best weights, diagnose (metrics: stopped=diverged)."""
    return DivergenceGuard(factor, min_steps, restore_best_weights, monitors=_monitors(context))


@register_callback
def reduce_lr_on_plateau(context, monitor: str = "val_loss", factor: float = 0.1, patience: int = 5,
                         min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
    """Keras ReduceLROnPlateau that also works with a schedule (scales the schedule)."""
    return ReduceLROnPlateau(monitor=monitor, factor=factor, patience=patience, min_delta=min_delta,
                             cooldown=cooldown, min_lr=min_lr, verbose=1)


@register_callback
def tensorboard(context, histogram_freq: int = 0, update_ratio_histograms: bool = False, write_graph: bool = True):
    """TensorBoard event files in <run dir>/tensorboard: loss, metrics, learning rate, monitors' values."""
    if context.out_dir is None:
        raise UserError("callbacks.tensorboard writes into the run folder; run it from a recipe.")
    if histogram_freq < 0:
        raise RecipeError(f"callbacks.tensorboard.histogram_freq must be >= 0 (epochs between weight "
                          f"histograms; 0: none). Received: histogram_freq={histogram_freq}")
    specs = getattr(context.recipe, "callbacks", None) or {}
    if update_ratio_histograms and "update_ratio" not in specs:
        raise RecipeError("callbacks.tensorboard.update_ratio_histograms needs [callbacks.update_ratio] in the "
                          "same recipe. Received: update_ratio_histograms=true")
    return TensorBoard(os.path.join(context.out_dir, "tensorboard"), update_ratio_histograms,
                       histogram_freq=histogram_freq, write_graph=write_graph)


def _check_mlflow(tracking_uri: str = "", experiment: str = "", log_model: bool = False):
    check_tracking(tracking_uri)


@register_callback(name="mlflow", preflight=_check_mlflow)
def mlflow_tracking(context, tracking_uri: str = "", experiment: str = "", log_model: bool = False):
    """MLflow tracking (`tracking` extra): the recipe as params, every epoch's metrics, the run's artifacts."""
    if context.out_dir is None:
        raise UserError("callbacks.mlflow keeps its run id in the run folder; run it from a recipe.")
    check_tracking(tracking_uri)
    return MlflowLogger(context.out_dir, context.recipe, tracking_uri, experiment, log_model)


@register_callback
def chance_check(context, enabled: bool = True, epochs: int = 2, tolerance: float = 0.02):
    """Always on: warns when the training loss stays at chance (ln C) over the first epochs, naming the likely cause."""
    if not enabled:
        return keras.callbacks.Callback()
    # One instance for the whole run: a staged run builds its callbacks once per stage, and the
    # check covers the run's first epochs across stages.
    key = ("chance_check", epochs, tolerance)
    if key not in context.extras:
        recipe = context.recipe
        context.extras[key] = ChanceCheck(
            probe=context.probe, epochs=epochs, tolerance=tolerance,
            run_epochs=getattr(recipe, "epochs", None), random_frozen_bn=random_backbone_frozen_bn(recipe))
    return context.extras[key]
