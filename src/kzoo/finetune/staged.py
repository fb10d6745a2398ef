"""Staged fine-tuning: build the model around a backbone, then train it stage by stage with
frozen groups and per-group learning rates, keeping one history across stages.

`kzoo run <recipe with [finetune] stages>` and `kzoo finetune` both end in `run_staged`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from kzoo.data.framing import prepare_arrays
from kzoo.errors import RecipeError, UserError
from kzoo.finetune.plan import parse_stages
from kzoo.finetune.structure import freeze, model_structure

PRETRAINED = "pretrained.keras"


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def _head(x, num_classes, dropout, seed):
    import keras

    from kzoo.zoo.blocks import classifier_head

    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif len(x.shape) > 2:
        x = keras.layers.Flatten(name="head_flatten")(x)
    return classifier_head(x, num_classes, dropout=dropout, seed=seed)


def replace_head(model, num_classes, input_shape=None, dropout=0.0, front=(), seed=0, name=None):
    """A new model: `front` layers, `model` up to its head (nested as `backbone`), a new head.

    The head is every layer from the first `head_*` layer on (zoo models name it so).
    """
    import keras

    first = next((lyr for lyr in model.layers if lyr.name.startswith("head_")), None)
    if first is None:
        raise UserError(f"The backbone has no head_* layers to replace. Received: model={model.name!r}")
    expected = tuple(model.input_shape[1:])
    if input_shape is not None and tuple(input_shape) != expected:
        raise UserError(f"The backbone takes inputs of shape {expected}; bring the data to it with "
                        f"finetune.resize / finetune.pad or data.image_size. Received: input_shape={tuple(input_shape)}")
    features = keras.Model(model.inputs, first.input, name="backbone")
    inputs = keras.Input(shape=tuple(input_shape or expected), name="input")
    x = inputs
    for layer in front:
        x = layer(x)
    x = features(x)
    return keras.Model(inputs, _head(x, num_classes, dropout, seed), name=name or f"{model.name}_finetune")


def _augmentation(recipe, input_shape):
    from kzoo.data.preprocessing import augmentation_layers

    a = recipe.data.augment
    return augmentation_layers(input_shape, a.flip, a.translation, a.rotation, a.zoom, a.crop, seed=recipe.seed)


def _recipe_with_model(recipe, model_name):
    import dataclasses

    return dataclasses.replace(recipe, model={"name": model_name})


def _load_backbone_file(path, trust_model=False):
    from kzoo.safe_load import load_model_file

    return load_model_file(path, trust_model=trust_model)


def is_backbone_path(backbone: str) -> bool:
    return backbone.endswith(".keras") or os.path.isdir(backbone) or os.sep in backbone


def build_finetune_model(recipe, arrays, pretrained=None, trust_model=False):
    """The model a [finetune] section describes, for the target data in `arrays`.

    - `backbone = ""` and a zoo model name build that model (the [model] table for ""): with
      `weights` a `.weights.h5` of the same architecture, or `none`;
    - a `keras.applications` name builds it without its top, behind the preprocessing it
      expects, with `weights` `imagenet`, a weights file or `none`, and a new head;
    - a `model.keras` path (or a run directory) from an earlier `kzoo run` keeps that model up to
      its head and adds a new head;
    - `pretrained` (from [finetune.pretrain]) is used like a loaded `model.keras`.
    """
    import keras

    from kzoo.recipes.runner import build_model
    from kzoo.zoo.backbones import BACKBONES, build_application, input_layers

    ft, info, seed = recipe.finetune, arrays.info, recipe.seed
    backbone = ft.backbone
    if pretrained is not None or is_backbone_path(backbone):
        source = pretrained if pretrained is not None else _load_backbone_file(backbone, trust_model)
        front = _augmentation(recipe, info.input_shape)
        return replace_head(source, info.num_classes, info.input_shape, ft.head_dropout, front, seed)
    if backbone and BACKBONES.is_application(backbone):
        front = _augmentation(recipe, info.input_shape)
        pixel_max = float(np.max(arrays.x_train)) or 255.0
        pre, shape = input_layers(backbone, info.input_shape, pixel_max)
        app = build_application(backbone, shape, ft.weights)
        inputs = keras.Input(shape=tuple(info.input_shape), name="input")
        x = inputs
        for layer in front + pre:
            x = layer(x)
        outputs = _head(app(x), info.num_classes, ft.head_dropout, seed)
        return keras.Model(inputs, outputs, name=f"{backbone.lower()}_finetune")
    if backbone:
        BACKBONES.get(backbone)  # unknown name: the closest-name error
        recipe = _recipe_with_model(recipe, backbone)
    if ft.weights == "imagenet":
        raise UserError("Zoo models have no ImageNet weights; use 'none', a weights file or backbone=PATH. "
                        "Received: weights='imagenet'")
    model = build_model(recipe, arrays)
    if ft.weights not in ("", "none"):
        if not os.path.isfile(ft.weights):
            raise UserError(f"No such weights file. Received: weights={ft.weights!r}")
        try:
            model.load_weights(ft.weights)
        except (ValueError, OSError) as e:
            raise UserError(f"Cannot load {ft.weights} into {recipe.model['name']}: {str(e).splitlines()[0]}") from None
    return model


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
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


def compile_stage(model, recipe, stage, structure, steps_per_epoch, callbacks=()):
    """Freezes for `stage` and compiles with its rates; returns the trainable group names."""
    import dataclasses

    from kzoo.callbacks.schedules import build_schedule
    from kzoo.finetune.optimizer import with_group_learning_rates
    from kzoo.optimizers import build_optimizer
    from kzoo.recipes.runner import resolve_steps_per_execution

    rates = stage.rates(len(structure.stages))
    groups = freeze(model, structure, len(rates), recipe.finetune.train_bn)
    schedule = build_schedule(recipe.schedule, stage.lr, steps_per_epoch, stage.epochs)
    base = build_optimizer(dataclasses.replace(recipe.optimizer, lr=stage.lr), schedule)
    optimizer = with_group_learning_rates(base, group_multipliers(structure, rates))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=recipe.jit_compile,
                  steps_per_execution=resolve_steps_per_execution(recipe, steps_per_epoch, callbacks))
    return groups


def fit_stages(model, recipe, train, val, steps_per_epoch, backup_dir, callbacks=lambda: [], verbose=2):
    """Trains `model` through the recipe's stage plan, checkpointing every epoch in `backup_dir`.

    A run killed part-way resumes from the newest checkpoint there: finished stages are skipped,
    the stage the checkpoint is in is compiled again (its freezing and per-group rates) and goes
    on with its optimizer state (iteration count included, so schedules continue); a checkpoint
    at the end of a stage, or where a callback stopped it early, starts the next one. The
    callbacks' own state (early stopping's patience and best weights, ...) is saved with every
    checkpoint and restored inside the stage it belongs to. Each epoch's batches and random masks
    depend only on the seed and the epoch, so a resumed run ends as an uninterrupted one.

    Args:
        model: the model to train, not compiled yet.
        recipe: a recipe with [finetune] stages.
        train: the `(x, y)` training arrays.
        val: the validation dataset, or `None`.
        steps_per_epoch: batches per epoch.
        backup_dir: the checkpoint folder (`<out>/backup`).
        callbacks: returns a new list of callbacks for each stage. Defaults to none.
        verbose: Keras's fit verbosity. Defaults to `2`.

    Returns:
        `(rows, boundaries, seconds, resumed_after)`: one history row per epoch (those before a
        kill included), numbered across stages, with a `stage` column (1, 2, ...) and the stage's
        `trainable` groups; the epochs after which a new stage starts; the training wall time of
        this call; the epochs restored from a checkpoint (0 when none).
    """
    from kzoo.data.core import make_epoch_dataset
    from kzoo.runs import latest_snapshot, resume_callbacks

    stages = parse_stages(recipe.finetune.stages)
    structure = model_structure(model)
    if not structure.head:
        raise UserError(f"The model has no head_* layers, so no stage plan applies. Received: model={model.name!r}")
    snapshot = latest_snapshot(backup_dir)
    rows = snapshot.rows if snapshot else []
    if snapshot:
        snapshot.load_weights(model)  # the optimizer state comes back with the stage it belongs to
    seconds, d = 0.0, recipe.data
    for k, stage in enumerate(stages, start=1):
        ran = sum(row["stage"] == k for row in rows)
        stopped = ran > 0 and snapshot is not None and snapshot.stopped  # the newest checkpoint is in stage k
        if _stage_over(rows, k, ran, stage.epochs, stopped, last=k == len(stages)):
            continue
        start, end = len(rows), len(rows) - ran + stage.epochs
        own = callbacks()
        stage_callbacks = own + resume_callbacks(
            backup_dir, own, fields={"stage": k, "trainable": stage.trainable}, restore=ran > 0)
        groups = compile_stage(model, recipe, stage, structure, steps_per_epoch, stage_callbacks)
        if verbose and snapshot and start == snapshot.epoch:
            print(f"Resuming stage {k}/{len(stages)} after epoch {start} of {recipe.epochs} from {backup_dir}.")
        if verbose:
            print(f"stage {k}/{len(stages)} {stage.spelling()}: training {', '.join(groups)}")
        batches = make_epoch_dataset(train[0], train[1], d.batch_size, recipe.seed, end, start, d.shuffle_buffer)
        began = time.perf_counter()
        model.fit(batches, validation_data=val, initial_epoch=start, epochs=end, steps_per_epoch=steps_per_epoch,
                  callbacks=stage_callbacks, verbose=verbose, shuffle=False)  # `batches` is shuffled per epoch
        seconds += time.perf_counter() - began
        rows = stage_callbacks[-1].rows  # the backup's: every epoch once
    boundaries = [a["epoch"] for a, b in zip(rows, rows[1:]) if a["stage"] != b["stage"]]
    return rows, boundaries, seconds, snapshot.epoch if snapshot else 0


def _stage_over(rows, k, ran, epochs, stopped, last):
    """Whether stage `k` is skipped: a later stage has begun, or its `epochs` are done or a
    callback `stopped` it, and it is not the `last` (that one is compiled and restored even
    then: the saved model keeps its optimizer)."""
    return (bool(rows) and rows[-1]["stage"] > k) or ((ran >= epochs or stopped) and not last)


def _fit_plain(recipe, arrays, batch_size, verbose):
    """Trains `build_model(recipe)` on `arrays` for `recipe.epochs`; returns (model, test accuracy)."""
    from kzoo.data.core import make_dataset
    from kzoo.recipes.runner import build_model, compile_model

    d = recipe.data
    train = make_dataset(arrays.x_train, arrays.y_train, batch_size, True, recipe.seed, d.cache, d.shuffle_buffer)
    val, test = _eval_datasets(arrays, batch_size, d)
    model = build_model(recipe, arrays)
    compile_model(model, recipe, int(np.ceil(len(arrays.x_train) / batch_size)))
    model.fit(train, validation_data=val, epochs=recipe.epochs, verbose=verbose, shuffle=False)  # shuffled dataset
    _, accuracy = model.evaluate(test, verbose=0)
    return model, round(float(accuracy), 6)


def _eval_datasets(arrays, batch_size, d):
    """`(val, test)` datasets; `val` is `None` without validation data."""
    from kzoo.data.core import make_dataset

    val = make_dataset(arrays.x_val, arrays.y_val, batch_size, cache=d.cache) if len(arrays.x_val) else None
    return val, make_dataset(arrays.x_test, arrays.y_test, batch_size, cache=d.cache)


def _pretrain(recipe, run_dir, verbose):
    """Trains the recipe's [model] on [finetune.pretrain]'s dataset into `pretrained.keras`;
    returns the metrics it adds."""
    import dataclasses

    from kzoo import data as kdata

    p, d = recipe.finetune.pretrain, recipe.data
    arrays = kdata.load_arrays(p.dataset, d.data_dir or None, d.validation_split, d.test_split, d.split_seed)
    plain = dataclasses.replace(recipe, data=dataclasses.replace(d, augment=type(d.augment)()), epochs=p.epochs,
                                optimizer=dataclasses.replace(recipe.optimizer, lr=p.lr))
    if verbose:
        print(f"pretraining {recipe.model['name']} on {p.dataset} for {p.epochs} epochs")
    model, accuracy = _fit_plain(plain, arrays, p.batch_size or d.batch_size, verbose)
    run_dir.save_model(model, PRETRAINED)
    return {"pretrain_test_accuracy": accuracy, "pretrain_dataset": p.dataset}


def _scratch(recipe, arrays, verbose):
    """The same architecture trained from scratch on the same data for the plan's total epochs;
    returns the metric it adds."""
    from kzoo.recipes.runner import seed_everything

    if recipe.finetune.backbone:
        recipe = _recipe_with_model(recipe, recipe.finetune.backbone)
    if verbose:
        print(f"baseline: {recipe.model['name']} from scratch for {recipe.epochs} epochs")
    seed_everything(recipe.seed, recipe.deterministic)
    _, accuracy = _fit_plain(recipe, arrays, recipe.data.batch_size, verbose)
    return {"scratch_test_accuracy": accuracy}


def _check_plan(recipe):
    """Refuses what [finetune] cannot do before anything is trained."""
    ft = recipe.finetune
    if ft.pretrain.dataset and ft.backbone:
        raise RecipeError(f"finetune.pretrain trains the [model]; leave finetune.backbone empty. "
                          f"Received: backbone={ft.backbone!r}")
    if ft.scratch_baseline and ft.backbone and not _is_zoo_model(ft.backbone):
        raise RecipeError("finetune.scratch_baseline needs a zoo backbone (the [model] or a zoo name). "
                          f"Received: backbone={ft.backbone!r}")


def _is_zoo_model(name):
    from kzoo.zoo import MODELS

    return name in MODELS


def run_staged(recipe, run_dir, verbose=2, trust_model=False):
    """Runs a recipe with [finetune] stages into an open `RunDir`; returns a `RunResult`.

    Writes the usual artifacts: `history.csv` with `stage` and `trainable` columns, `curves.png`
    with dashed lines at stage boundaries, `metrics.json` with `test_accuracy` and, when asked
    for, `pretrain_test_accuracy` and `scratch_test_accuracy`. A run killed part-way resumes
    when run again into the same directory: pretraining and the scratch baseline are not
    repeated, and training goes on inside the stage it was in (`fit_stages`).
    """
    from kzoo import data as kdata
    from kzoo.callbacks import LearningRateLogger, RunContext, build_callbacks
    from kzoo.plots import plot_curves
    from kzoo.recipes.runner import EpochTimer, RunResult, run_metrics, seed_everything
    from kzoo.runs import BACKUP, cached_result

    _check_plan(recipe)
    ft, d = recipe.finetune, recipe.data
    raw = kdata.load_arrays(d.dataset, d.data_dir or None, d.validation_split, d.test_split, d.split_seed,
                            d.image_size or None)
    arrays = prepare_arrays(raw, ft, d.split_seed)
    val, test = _eval_datasets(arrays, d.batch_size, d)
    steps_per_epoch = int(np.ceil(arrays.info.num_train / d.batch_size))
    run_dir.write_text("recipe.toml", recipe.to_toml())  # before backup/: a resume checks it there
    backup_dir = run_dir.file(BACKUP)
    seed_everything(recipe.seed, recipe.deterministic)
    extra, pretrained = {}, None
    if ft.pretrain.dataset:
        extra.update(cached_result(backup_dir, "pretrain", lambda: _pretrain(recipe, run_dir, verbose)))
        pretrained = _load_backbone_file(run_dir.file(PRETRAINED))  # as a resumed run reads it
    if ft.scratch_baseline:
        extra.update(cached_result(backup_dir, "scratch", lambda: _scratch(recipe, arrays, verbose)))
    seed_everything(recipe.seed, recipe.deterministic)  # the same start whatever ran (or was kept) above
    model = build_finetune_model(recipe, arrays, pretrained, trust_model)

    timer = EpochTimer()
    probe_n = min(len(arrays.x_train), 256)
    context = RunContext(recipe=recipe, out_dir=run_dir.path, steps_per_epoch=steps_per_epoch,
                         probe=(arrays.x_train[:probe_n], arrays.y_train[:probe_n]))
    made = []

    def callbacks():
        made[:] = [LearningRateLogger(), timer] + build_callbacks(recipe.callbacks, context)
        return made

    rows, boundaries, seconds, resumed_after = fit_stages(
        model, recipe, (arrays.x_train, arrays.y_train), val, steps_per_epoch, backup_dir, callbacks, verbose)
    test_loss, test_accuracy = model.evaluate(test, verbose=0)
    metrics = run_metrics(recipe, arrays.info, model, test_loss, test_accuracy, rows, seconds, timer.times)
    metrics.update({
        "model": model.name,
        "backbone": ft.backbone or recipe.model["name"],
        "stages": [s.spelling() for s in parse_stages(ft.stages)],
        "stage_boundaries": boundaries,
        # over the epochs of every stage this process trained (the timer only keeps the last stage's)
        "samples_per_second": round(arrays.info.num_train * (len(rows) - resumed_after) / max(seconds, 1e-9), 1),
        **extra,
    })
    for cb in made:
        if getattr(cb, "kzoo_metrics", None):
            metrics.update(cb.kzoo_metrics)
    if resumed_after:
        metrics["resumed_after_epoch"] = resumed_after
    run_dir.write_csv("history.csv", rows)
    run_dir.save_model(model)
    title = f"{recipe.name}: test accuracy {test_accuracy:.4f}"
    if "scratch_test_accuracy" in extra:
        title += f" (from scratch {extra['scratch_test_accuracy']:.4f})"
    plot_curves(rows, run_dir.file("curves.png"), title=title, boundaries=boundaries)
    run_dir.write_json("metrics.json", metrics)  # last: its presence marks a finished run
    run_dir.remove_backup()
    from kzoo.report import write_report  # report.html, as for single-stage runs

    write_report(run_dir.path)
    return RunResult(metrics=metrics, out_dir=run_dir.path, history=rows, model=model)
