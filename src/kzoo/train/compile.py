"""Compiling a model for one stage of a plan: freezing, per-group rates, the optimizer with its
schedule, XLA and steps per execution, inside the run's strategy scope."""

from __future__ import annotations

import dataclasses

from kzoo.finetune.structure import freeze
from kzoo.train.determinism import jit_compile_for
from kzoo.train.distribution import resolve_steps_per_execution


def group_multipliers(structure, rates) -> dict:
    """`{layer name: rate / head rate}` for every layer with weights in the trainable groups."""
    out = {}
    for (_, layers), rate in zip(structure.groups(), rates):
        factor = rate / rates[0]
        if factor == 1.0:
            continue
        for layer in layers:
            for sub in _weighted(layer):
                out[sub.name] = factor
    return out


def _weighted(layer):
    if layer.weights:
        yield layer
    for sub in getattr(layer, "_layers", []) or []:
        yield from _weighted(sub)


def compile_stage(model, recipe, stage, structure, steps_per_epoch, callbacks=(), setup=None):
    """Compiles `model` for `stage` of the recipe's plan; returns the trainable group names.

    With a `structure` (a staged plan) it freezes the groups the stage leaves out and gives the
    others their per-group rates; without one (a plain run) every layer trains at the stage's
    rate. The schedule spans the stage's epochs.

    Args:
        model: the model.
        recipe: the `Recipe`.
        stage: a `kzoo.finetune.Stage` (its `lr`, `epochs`, trainable groups).
        structure: the model's `Structure` for a staged plan, or `None`.
        steps_per_epoch: batches per epoch.
        callbacks: the fit's callbacks (one that needs every step gets one step per call).
            Defaults to none.
        setup: the run's `Setup` (strategy scope). Defaults to `None` (one device).
    """
    from kzoo.callbacks.schedules import build_schedule
    from kzoo.optimizers import build_optimizer

    groups, multipliers = ["all"], {}
    if structure is not None:
        rates = stage.rates(len(structure.stages))
        groups = freeze(model, structure, len(rates), recipe.finetune.train_bn)
        multipliers = group_multipliers(structure, rates)
    schedule = build_schedule(recipe.schedule, stage.lr, steps_per_epoch, stage.epochs)
    strategy = setup.strategy if setup is not None else None
    with setup.scope() if setup is not None else _nullcontext():
        optimizer = build_optimizer(dataclasses.replace(recipe.optimizer, lr=stage.lr), schedule, multipliers)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=jit_compile_for(recipe, model, setup),
                      steps_per_execution=resolve_steps_per_execution(recipe, steps_per_epoch, callbacks, strategy))
    return groups


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()
