"""Runs a recipe end to end: data, model, training, evaluation, artifacts."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field

import keras

from kzoo.errors import RecipeError
from kzoo.recipes.schema import Recipe


@dataclass
class RunResult:
    """What `run` returns: the metrics written to `metrics.json`, and where the run lives."""

    metrics: dict
    out_dir: str
    history: list = field(default_factory=list)
    model: object = None


def seed_everything(seed: int, deterministic: bool = True):
    """Seeds Python, numpy and TensorFlow; with `deterministic`, makes TF ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def package_versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("kzoo", "keras", "tensorflow", "tensorflow-cpu", "keras-tuner", "tensorflow-datasets", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_model(recipe: Recipe, arrays):
    """The recipe's model with augmentation and standardization layers inside it."""
    from kzoo.data.preprocessing import augmentation_layers, preprocessing_layers
    from kzoo.zoo import create_model

    info = arrays.info
    aug = recipe.data.augment
    layers = augmentation_layers(info.input_shape, aug.flip, aug.translation, aug.rotation, aug.zoom,
                                 aug.crop, seed=recipe.seed)
    layers += preprocessing_layers(arrays.x_train, recipe.data.standardize, recipe.data.pca_whiten)
    kwargs = {k: v for k, v in recipe.model.items() if k != "name"}
    try:
        model = create_model(recipe.model["name"], info.input_shape, info.num_classes, layers,
                             seed=recipe.seed, **kwargs)
    except ValueError as e:
        raise RecipeError(f"model: {e}") from None
    lsuv_if_asked(model, recipe, arrays)
    return model


def lsuv_if_asked(model, recipe: Recipe, arrays):
    """With `model.initializer = "lsuv"` the model was built orthonormal; LSUV then rescales each
    Dense/Conv layer to unit output variance on a training batch (Mishkin & Matas 2015)."""
    spec = recipe.model.get("initializer")
    if (spec.get("name") if isinstance(spec, dict) else spec) != "lsuv":
        return
    from kzoo.zoo.initializers import lsuv_init

    lsuv_init(model, arrays.x_train[:256].astype("float32"), seed=recipe.seed)


def run_metrics(recipe, info, model, test_loss, test_accuracy, rows, train_seconds, epoch_times) -> dict:
    """What `metrics.json` holds for every run; throughput is steady state (first epoch left out)."""
    steady = epoch_times[1:] or epoch_times
    return {
        "recipe": recipe.name,
        "dataset": info.name,
        "model": recipe.model["name"],
        "params": int(model.count_params()),
        "test_accuracy": round(float(test_accuracy), 6),
        "test_loss": round(float(test_loss), 6),
        "best_val_accuracy": round(max((r.get("val_accuracy", 0.0) for r in rows), default=0.0), 6),
        "epochs_run": len(rows),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(info.num_train * len(steady) / max(sum(steady), 1e-9), 1),
        "num_train": info.num_train,
        "num_val": info.num_val,
        "num_test": info.num_test,
        "seed": recipe.seed,
        "versions": package_versions(),
    }


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, for a steady-state throughput that excludes the first."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def resolve_steps_per_execution(recipe: Recipe, steps_per_epoch: int, callbacks=(), strategy=None) -> int:
    """Steps run per call into the compiled graph. `0` (auto): the largest divisor of the steps
    per epoch up to 32, which removes most per-step Python overhead on small models; 1 when a
    callback needs to see every step (it sets `needs_every_step = True`), and 1 under a strategy
    with several replicas: Keras's multi-step loop fails under `MirroredStrategy` there on
    TF 2.21 / Keras 3.15 (`You must feed a value for placeholder tensor ...
    [Op:__inference_multi_step_on_iterator]`).

    It must divide the steps per epoch: Keras runs whole calls, so with 55 steps an epoch and 32
    a call every epoch would take 64 batches, borrow the next epoch's, and a later epoch would
    find the data used up and train on nothing. An explicit recipe value that does not divide
    them is refused (`RecipeError`)."""
    if recipe.steps_per_execution:
        if steps_per_epoch % recipe.steps_per_execution:
            raise RecipeError(
                f"steps_per_execution must divide the {steps_per_epoch} steps of an epoch "
                f"({', '.join(map(str, _divisors(steps_per_epoch)))}), or be 0 for auto. "
                f"Received: steps_per_execution={recipe.steps_per_execution}")
        return recipe.steps_per_execution
    if any(getattr(cb, "needs_every_step", False) for cb in callbacks):
        return 1
    if strategy is not None and int(getattr(strategy, "num_replicas_in_sync", 1) or 1) > 1:
        return 1
    return max(d for d in _divisors(steps_per_epoch) if d <= 32)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def compile_model(model, recipe: Recipe, steps_per_epoch: int, steps_per_execution: int | None = None):
    from kzoo.callbacks.schedules import build_schedule
    from kzoo.optimizers import build_optimizer

    schedule = build_schedule(recipe.schedule, recipe.optimizer.lr, steps_per_epoch, recipe.epochs)
    model.compile(
        optimizer=build_optimizer(recipe.optimizer, schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=recipe.jit_compile,
        steps_per_execution=steps_per_execution or resolve_steps_per_execution(recipe, steps_per_epoch),
    )
    return model


def run(recipe, out: str | None = None, overwrite: bool = False, verbose: int = 2,
        trust_model: bool = False) -> RunResult:
    """Trains a recipe, evaluates it on the held-out test split and writes the run directory.

    Args:
        recipe: a `Recipe`, or a shipped name / TOML path passed to `kzoo.recipes.load`.
        out: the run directory. Defaults to `runs/<recipe>-<timestamp>`.
        overwrite: replace an earlier run's artifacts in `out`. Defaults to `False`.
        verbose: Keras's fit verbosity (0 silent, 2 one line per epoch). Defaults to `2`.
        trust_model: load a `finetune.backbone` model file holding Python code (`Lambda`
            layers); only for files you trust. An argument, never a recipe field. Defaults to `False`.

    Returns:
        A `RunResult` with the metrics (as in `metrics.json`), the directory, the history rows
        and the trained model.

    Example:
        >>> result = kzoo.recipes.run("mlp-digits", out="runs/try")
        >>> result.metrics["test_accuracy"]
    """
    from kzoo.recipes.loader import load
    from kzoo.runs import RunDir, default_out

    if isinstance(recipe, str):
        recipe = load(recipe)
    out = out or default_out(recipe.name)
    created = not os.path.exists(out)
    # resume=True: an unfinished run of the same recipe in `out` continues from its checkpoint.
    run_dir = RunDir(out, overwrite=overwrite, resume=True)
    policy = keras.config.dtype_policy()  # a mixed-precision recipe sets the global one
    try:
        with run_dir:
            run_dir.check_same_recipe(recipe.to_toml())
            if recipe.finetune.stages:  # staged fine-tuning (kzoo.finetune); single-stage runs below
                from kzoo.finetune.staged import run_staged

                result = run_staged(recipe, run_dir, verbose, trust_model=trust_model)
            else:
                result = _train(recipe, run_dir, verbose)
    except BaseException:
        if created and os.path.isdir(out) and set(os.listdir(out)) <= {"recipe.toml"}:
            shutil.rmtree(out)  # leave nothing behind for a run that never started
        raise
    finally:
        keras.config.set_dtype_policy(policy)
    return result


def _train(recipe: Recipe, run_dir, verbose) -> RunResult:
    import numpy as np

    from kzoo import data as kdata
    from kzoo.callbacks import LearningRateLogger, RunContext, build_callbacks
    from kzoo.data.core import make_epoch_dataset
    from kzoo.plots import plot_curves
    from kzoo.runs import BACKUP, latest_snapshot, resume_callbacks

    strategy = _distribution(recipe)  # None on the default single-device path
    if strategy is not None and recipe.strategy == "multiworker":
        return _train_multiworker(recipe, strategy, run_dir, verbose)
    seed_everything(recipe.seed, recipe.deterministic)
    d = recipe.data
    batch_size = d.batch_size if strategy is None else _global_batch_size(recipe, strategy)
    splits = kdata.load(d.dataset, batch_size, d.data_dir or None, d.validation_split, d.test_split,
                        d.split_seed, recipe.seed, d.image_size or None, d.cache, d.shuffle_buffer,
                        d.eval_batch_size or None)
    arrays = splits.arrays
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(recipe, arrays)
    steps_per_epoch = int(np.ceil(arrays.info.num_train / batch_size))
    probe_n = min(len(arrays.x_train), 256)
    context = RunContext(recipe=recipe, out_dir=run_dir.path, steps_per_epoch=steps_per_epoch,
                         probe=(arrays.x_train[:probe_n].astype("float32"), arrays.y_train[:probe_n]))
    timer = EpochTimer()
    callbacks = [LearningRateLogger(), timer] + build_callbacks(recipe.callbacks, context)
    # Resume: checkpoints every epoch in <out>/backup/; each epoch's shuffle and dropout masks
    # depend only on (seed, epoch), so a resumed run ends equal to an uninterrupted one.
    backup_dir = run_dir.file(BACKUP)
    snapshot = latest_snapshot(backup_dir)
    initial_epoch = snapshot.epoch if snapshot else 0
    if snapshot and verbose:
        print(f"Resuming {run_dir.path} after epoch {initial_epoch} of {recipe.epochs}.")
    train = make_epoch_dataset(arrays.x_train, arrays.y_train, batch_size, recipe.seed, recipe.epochs,
                               initial_epoch, d.shuffle_buffer)
    reseed, backup = resume_callbacks(backup_dir, callbacks)  # saves and restores their state too
    callbacks += [reseed, backup]
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        compile_model(model, recipe, steps_per_epoch,
                      resolve_steps_per_execution(recipe, steps_per_epoch, callbacks, strategy))
    run_dir.write_text("recipe.toml", recipe.to_toml())

    start = time.perf_counter()
    model.fit(train, validation_data=splits.val, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch,
              shuffle=False, callbacks=callbacks, verbose=verbose)  # `train` is shuffled per epoch
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(splits.test, verbose=0)

    rows = backup.rows  # every epoch once, those before a kill included
    metrics = run_metrics(recipe, arrays.info, model, test_loss, test_accuracy, rows, train_seconds, timer.times)
    for cb in callbacks:
        extra = getattr(cb, "kzoo_metrics", None)
        if extra:
            metrics.update(extra)
    run_dir.write_csv("history.csv", rows)
    run_dir.save_model(model)
    plot_curves(rows, run_dir.file("curves.png"), title=f"{recipe.name}: test accuracy {test_accuracy:.4f}")
    # Training-dynamics monitors (kzoo.callbacks) draw dynamics.png when any of them sampled.
    from kzoo.plots_dynamics import write_dynamics_plot

    write_dynamics_plot(callbacks, run_dir.file("dynamics.png"), title=recipe.name)
    if initial_epoch:
        metrics["resumed_after_epoch"] = initial_epoch
    run_dir.write_json("metrics.json", metrics)  # last: its presence marks a finished run
    run_dir.remove_backup()
    from kzoo.report import write_report  # report.html with every plot (issue #9)

    write_report(run_dir.path)
    return RunResult(metrics=metrics, out_dir=run_dir.path, history=rows, model=model)


# --- Distribution (kzoo.tuning.strategy): strategy, mixed precision, batch scaling, multi-worker. ---


def _distribution(recipe):
    """The recipe's strategy with its dtype policy set, or None for the default path."""
    from kzoo.tuning.strategy import apply_precision, make_strategy, uses_distribution

    if not uses_distribution(recipe):
        return None
    strategy = make_strategy(recipe.strategy)  # first: MultiWorkerMirroredStrategy must precede other ops
    apply_precision(recipe.mixed_precision, strategy)
    return strategy


def _global_batch_size(recipe, strategy):
    from kzoo.tuning.strategy import global_batch_size

    return global_batch_size(recipe, strategy)


def _train_multiworker(recipe, strategy, run_dir, verbose) -> RunResult:
    """`strategy = "multiworker"`: a custom step through `strategy.run` (see `train_multiworker`).

    Every worker writes its own run directory (its `--out`); all end with the same weights.
    """
    from kzoo.plots import plot_curves
    from kzoo.tuning.strategy import train_multiworker, worker_index

    if recipe.callbacks:
        import warnings

        warnings.warn(f"strategy = multiworker runs a custom loop; [callbacks] are not run: "
                      f"{', '.join(recipe.callbacks)}", stacklevel=2)
    run_dir.write_text("recipe.toml", recipe.to_toml())
    model, rows, arrays, seconds, times, evaluate = train_multiworker(recipe, strategy, verbose)
    test_loss, test_accuracy = evaluate(arrays.x_test, arrays.y_test)
    index, workers = worker_index()
    metrics = run_metrics(recipe, arrays.info, model, test_loss, test_accuracy, rows, seconds, times)
    metrics.update({
        "strategy": "multiworker",
        "replicas": int(strategy.num_replicas_in_sync),
        "worker_index": index,
        "num_workers": workers,
    })
    run_dir.write_csv("history.csv", rows)
    run_dir.save_model(model)
    plot_curves(rows, run_dir.file("curves.png"), title=f"{recipe.name}: test accuracy {test_accuracy:.4f}")
    run_dir.write_json("metrics.json", metrics)
    return RunResult(metrics=metrics, out_dir=run_dir.path, history=rows, model=model)
