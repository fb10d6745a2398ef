"""The one training loop: `fit_plan` compiles each stage of a plan (`compile_stage`) and fits it.
A plain run is a plan of one stage that trains every layer, staged fine-tuning a plan of N."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field

import keras

from kzoo.callbacks.schedules import build_schedule
from kzoo.errors import RecipeError, UserError
from kzoo.finetune.plan import Stage, parse_stages
from kzoo.finetune.structure import freeze, model_structure
from kzoo.optimizers import build_optimizer
from kzoo.runs import BestWeights, FinalizeEMA, latest_snapshot, resume_callbacks
from kzoo.train.determinism import jit_compile_for
from kzoo.train.distribution import resolve_steps_per_execution
from kzoo.train.losses import build_loss
from kzoo.train.metrics import build_metrics
from kzoo.train.multiworker import fit_multiworker


@dataclass
class FitResult:
    """What `fit_plan` returns."""

    rows: list = field(default_factory=list)  # one dict per epoch, those before a kill included
    boundaries: list = field(default_factory=list)  # epochs after which a new stage starts
    seconds: float = 0.0  # training wall time of this call
    resumed_after: int = 0  # epochs restored from a checkpoint
    best_epoch: int | None = None  # with checkpoint = "best": the epoch whose weights the model holds

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
            raise RecipeError(f"data.batch_size is larger than the training set ({data.info.num_train}). "
                              f"Received: batch_size={setup.batch_size}")
        return steps
    return math.ceil(data.info.num_train / setup.batch_size)


def group_multipliers(structure, rates) -> dict:
    """`{layer name: rate / head rate}` for every layer with weights in the trainable groups."""
    out = {}
    for (_, layers), rate in zip(structure.groups(), rates):
        factor = rate / rates[0]
        if factor != 1.0:
            out.update({sub.name: factor for layer in layers for sub in _weighted(layer)})
    return out


def _weighted(layer):
    # A layer whose variables carry its name stands for all of them; its sublayers' names (a
    # ViT block's `mha`, `ln_1`) repeat across groups, so they are never keys themselves.
    if any(layer.name in w.path.split("/") for w in layer.weights):
        yield layer
        return
    for sub in getattr(layer, "_layers", []) or []:
        yield from _weighted(sub)


def recipe_loss(recipe, data=None):
    """The recipe's `[loss]` for the dataset of `data` (`DataSplits`): its class names name the
    weights of a `class_weight` table, its training labels give the `balanced` ones. Without
    `data` only a recipe without class weights has a loss."""
    if data is None:
        if recipe.loss.class_weight != "none":
            raise ValueError(f"loss.class_weight needs the dataset: pass data. Received: data={data}")
        return build_loss(recipe, [])
    balanced = recipe.loss.class_weight == "balanced"
    return build_loss(recipe, data.info.class_names, data.train_labels if balanced else None)


def compile_stage(model, recipe, stage, structure, steps_per_epoch, callbacks=(), setup=None, data=None):
    """Compiles `model` for `stage` (a `kzoo.finetune.Stage`) of the recipe's plan, with a schedule
    over the stage's epochs, the recipe's loss (`recipe_loss`) and metrics; returns the trainable
    group names.

    With the model's `structure` (a staged plan) the groups the stage leaves out are frozen and
    the others get their per-group rates; with `None` every layer trains at the stage's rate.
    `callbacks` are the fit's (one that needs every step gets one step per call); `setup` is the
    run's `Setup`, `None` for one device; `data` the `DataSplits` the class weights come from.
    """
    groups, multipliers = ["all"], {}
    if structure is not None:
        rates = stage.rates(len(structure.stages), recipe.finetune.layer_decay)
        groups = freeze(model, structure, len(rates), recipe.finetune.train_bn)
        multipliers = group_multipliers(structure, rates)
    schedule = build_schedule(recipe.schedule, stage.lr, steps_per_epoch, stage.epochs)
    strategy = setup.strategy if setup is not None else None
    if recipe.optimizer.accumulate > 1 and strategy is not None and strategy.num_replicas_in_sync > 1:
        # strategy = "auto" resolved to several devices: refused before any training.
        raise RecipeError("optimizer.accumulate > 1 runs on one device only (Keras's gradient accumulation fails "
                          f"under tf.distribute); raise data.batch_size over the {strategy.num_replicas_in_sync} "
                          f"replicas instead. Received: accumulate={recipe.optimizer.accumulate}")
    loss = recipe_loss(recipe, data)
    with setup.scope() if setup is not None else contextlib.nullcontext():
        optimizer = build_optimizer(dataclasses.replace(recipe.optimizer, lr=stage.lr), schedule, multipliers)
        model.compile(optimizer=optimizer, loss=loss, metrics=build_metrics(recipe),
                      jit_compile=jit_compile_for(recipe, model, setup),
                      steps_per_execution=resolve_steps_per_execution(recipe, steps_per_epoch, callbacks, strategy))
    return groups


def keras_fit(model, data, setup, recipe, start, end, steps, callbacks, verbose):
    """One stage through `model.fit`: epochs `start` to `end` of the seeded per-epoch batches."""
    batches = data.epochs(setup.batch_size, recipe.seed, end, start, recipe.data.shuffle_buffer)
    model.fit(batches, validation_data=data.val, initial_epoch=start, epochs=end, steps_per_epoch=steps,
              callbacks=callbacks, verbose=verbose, shuffle=False)  # `batches` is shuffled per epoch


def fit_plan(model, recipe, data, setup, backup_dir=None, callbacks=lambda: [], extra=(), verbose=2) -> FitResult:
    """Trains `model` (not compiled yet) through the recipe's plan on `data` (`Splits`) with the
    run's `setup`, checkpointing every epoch in `backup_dir`.

    A run killed part-way resumes from the newest checkpoint there: finished stages are skipped,
    the stage the checkpoint is in is compiled again and goes on with its optimizer state
    (schedules continue) and its callbacks' state (patience, best weights); a checkpoint at the
    end of a stage, or where a callback stopped it, starts the next one. Each epoch's batches and
    random masks depend only on the seed and the epoch, so a resumed run ends as an
    uninterrupted one. Under `MultiWorkerMirroredStrategy` the step is `fit_multiworker`.

    Args:
        backup_dir: the checkpoint folder, or `None` for none (a tuner trial). Defaults to `None`.
        callbacks: returns a new list of the recipe's callbacks for each stage. Defaults to none.
        extra: callbacks added to every stage as they are (KerasTuner's). Defaults to none.
        verbose: Keras's fit verbosity. Defaults to `2`.
    """
    fit = fit_multiworker if setup.multiworker else keras_fit
    best = BestWeights() if recipe.checkpoint == "best" else None
    stages, staged = plan(recipe)
    structure = model_structure(model) if staged else None
    if staged and not structure.head:
        raise UserError(f"The model has no head_* layers, so no stage plan applies. Received: model={model.name!r}")
    steps = steps_per_epoch(recipe, data, setup)
    snapshot = latest_snapshot(backup_dir) if backup_dir else None
    rows = snapshot.rows if snapshot else []
    if snapshot and staged:
        snapshot.load_weights(model)  # the optimizer state comes back with the stage it belongs to
    if snapshot and best is not None:
        snapshot.restore_callback(best)  # the best epoch so far, whichever stage it was in
    seconds = 0.0
    for k, stage in enumerate(stages, start=1):
        ran = sum(row.get("stage", 1) == k for row in rows)
        later = bool(rows) and rows[-1].get("stage", 1) > k
        stopped = ran > 0 and snapshot is not None and snapshot.stopped  # the newest checkpoint is in stage k
        # A finished last stage is still compiled and restored: the saved model keeps its optimizer.
        if later or ((ran >= stage.epochs or stopped) and k < len(stages)):
            continue
        start, end = len(rows), len(rows) - ran + stage.epochs
        own = callbacks() + ([best] if best is not None else [])
        fields = {"stage": k, "trainable": stage.trainable} if staged else {}
        # Validation reads the average weights; the last epoch's checkpoint holds them, as the
        # fit ends with them (a resumed next stage starts from them).
        ema = [keras.callbacks.SwapEMAWeights(), FinalizeEMA()] if recipe.optimizer.ema else []
        stage_callbacks = own + list(extra) + ema + resume_callbacks(backup_dir, own, rows, fields,
                                                                     restore=ran > 0)
        groups = compile_stage(model, recipe, stage, structure, steps, stage_callbacks, setup, data)
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
    best_epoch = best.put_back(model) if best is not None else None
    return FitResult(rows, boundaries, seconds, snapshot.epoch if snapshot else 0, best_epoch)
