"""Fitting a plan of stages: the one training loop behind every path.

A plain run is a plan of one stage that trains every layer; staged fine-tuning a plan of N with
freezing and per-group rates; a tuner trial the same loop without checkpoints; multi-worker the
same loop with another step function (`kzoo.train.multiworker.fit_multiworker`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras

from kzoo.errors import UserError
from kzoo.finetune.plan import Stage, parse_stages
from kzoo.finetune.structure import model_structure
from kzoo.runs import _resume_classes, latest_snapshot, resume_callbacks
from kzoo.train.compile import compile_stage


@dataclass
class FitResult:
    """What `fit_plan` returns."""

    rows: list = field(default_factory=list)  # one dict per epoch, those before a kill included
    boundaries: list = field(default_factory=list)  # epochs after which a new stage starts
    seconds: float = 0.0  # training wall time of this call
    resumed_after: int = 0  # epochs restored from a checkpoint

    def history(self):
        """The rows as a `keras.callbacks.History` (what KerasTuner reads a trial's score from)."""
        out = keras.callbacks.History()
        keys = [k for k in (self.rows[0] if self.rows else {}) if k not in ("epoch", "stage", "trainable")]
        out.history = {k: [row.get(k) for row in self.rows] for k in keys}
        out.epoch = [row["epoch"] - 1 for row in self.rows]
        return out


def plan(recipe) -> tuple[list, bool]:
    """`(stages, staged)`: the recipe's [finetune] stages, or one stage training every layer."""
    if recipe.finetune.stages:
        return parse_stages(recipe.finetune.stages), True
    return [Stage("all", recipe.epochs, recipe.optimizer.lr)], False


def steps_per_epoch(recipe, data, setup) -> int:
    if setup.multiworker:  # every worker runs the same number of whole global batches
        steps = data.info.num_train // setup.batch_size
        if steps < 1:
            from kzoo.errors import RecipeError

            raise RecipeError(f"data.batch_size is larger than the training set ({data.info.num_train}). "
                              f"Received: batch_size={setup.batch_size}")
        return steps
    return math.ceil(data.info.num_train / setup.batch_size)


class RowRecorder(keras.callbacks.Callback):
    """Keeps one history row per epoch (with `fields`) where no checkpoint is written."""

    def __init__(self, rows, fields=None):
        super().__init__()
        self.rows = list(rows)
        self.fields = dict(fields or {})

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **self.fields}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.rows = self.rows[:epoch] + [row]


def keras_fit(model, data, setup, recipe, start, end, steps, callbacks, verbose):
    """One stage through `model.fit`: epochs `start` to `end` of the seeded per-epoch batches."""
    batches = data.epochs(setup.batch_size, recipe.seed, end, start, recipe.data.shuffle_buffer)
    model.fit(batches, validation_data=data.val, initial_epoch=start, epochs=end, steps_per_epoch=steps,
              callbacks=callbacks, verbose=verbose, shuffle=False)  # `batches` is shuffled per epoch


def fit_plan(model, recipe, data, setup, backup_dir=None, callbacks=lambda: [], extra=(), verbose=2,
             fit=keras_fit) -> FitResult:
    """Trains `model` through the recipe's plan, checkpointing every epoch in `backup_dir`.

    A run killed part-way resumes from the newest checkpoint there: finished stages are skipped,
    the stage the checkpoint is in is compiled again (its freezing and per-group rates) and goes
    on with its optimizer state (iteration count included, so schedules continue); a checkpoint
    at the end of a stage, or where a callback stopped it early, starts the next one. The
    callbacks' own state (early stopping's patience and best weights, ...) is saved with every
    checkpoint and restored inside the stage it belongs to. Each epoch's batches and random masks
    depend only on the seed and the epoch, so a resumed run ends as an uninterrupted one.

    Args:
        model: the model to train, not compiled yet.
        recipe: the `Recipe`.
        data: the `Splits` (`epochs`, `val`, `info`).
        setup: the run's `Setup` (strategy, batch size).
        backup_dir: the checkpoint folder (`<out>/backup`), or `None` for no checkpoints (a
            tuner trial). Defaults to `None`.
        callbacks: returns a new list of the recipe's callbacks for each stage. Defaults to none.
        extra: callbacks added to every stage as they are (KerasTuner's). Defaults to none.
        verbose: Keras's fit verbosity. Defaults to `2`.
        fit: the step function, `fit(model, data, setup, recipe, start, end, steps, callbacks,
            verbose)`. Defaults to `keras_fit`.
    """
    stages, staged = plan(recipe)
    structure = None
    if staged:
        structure = model_structure(model)
        if not structure.head:
            raise UserError(f"The model has no head_* layers, so no stage plan applies. Received: model={model.name!r}")
    steps = steps_per_epoch(recipe, data, setup)
    snapshot = latest_snapshot(backup_dir) if backup_dir else None
    rows = snapshot.rows if snapshot else []
    if snapshot and staged:
        snapshot.load_weights(model)  # the optimizer state comes back with the stage it belongs to
    seconds = 0.0
    for k, stage in enumerate(stages, start=1):
        ran = sum(row.get("stage", 1) == k for row in rows)
        stopped = ran > 0 and snapshot is not None and snapshot.stopped  # the newest checkpoint is in stage k
        if _stage_over(rows, k, ran, stage.epochs, stopped, last=k == len(stages)):
            continue
        start, end = len(rows), len(rows) - ran + stage.epochs
        own = callbacks()
        fields = {"stage": k, "trainable": stage.trainable} if staged else {}
        if backup_dir:
            tail = resume_callbacks(backup_dir, own, fields=fields, restore=ran > 0)
        else:
            tail = [_resume_classes()["EpochReseed"](), RowRecorder(rows, fields)]
        stage_callbacks = own + list(extra) + tail
        groups = compile_stage(model, recipe, stage, structure, steps, stage_callbacks, setup)
        if verbose and snapshot and start == snapshot.epoch:
            where = f"stage {k}/{len(stages)} " if staged else ""
            print(f"Resuming {where}after epoch {start} of {recipe.epochs} from {backup_dir}.")
        if verbose and staged:
            print(f"stage {k}/{len(stages)} {stage.spelling()}: training {', '.join(groups)}")
        began = time.perf_counter()
        fit(model, data, setup, recipe, start, end, steps, stage_callbacks, verbose)
        seconds += time.perf_counter() - began
        rows = stage_callbacks[-1].rows  # every epoch once
    boundaries = [a["epoch"] for a, b in zip(rows, rows[1:]) if a.get("stage") != b.get("stage")]
    return FitResult(rows, boundaries, seconds, snapshot.epoch if snapshot else 0)


def _stage_over(rows, k, ran, epochs, stopped, last):
    """Whether stage `k` is skipped: a later stage has begun, or its `epochs` are done or a
    callback `stopped` it, and it is not the `last` (that one is compiled and restored even
    then: the saved model keeps its optimizer)."""
    return (bool(rows) and rows[-1].get("stage", 1) > k) or ((ran >= epochs or stopped) and not last)
