"""The training engine: `train(recipe, run_dir)`, from a recipe to a finished run folder, for
`kzoo run`, staged fine-tuning and multi-worker training; a tuner trial and the learning-rate
finder use its parts (`prepare`, `build`, `recipe_callbacks`, `fit_plan`, `compile_stage`)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import keras

from kzoo import data as kdata
from kzoo import plots
from kzoo.callbacks import LearningRateLogger, RunContext, build_callbacks
from kzoo.data.framing import frame
from kzoo.plots_dynamics import write_dynamics_plot
from kzoo.report import write_report
from kzoo.runs import BACKUP, cached_result
from kzoo.safe_load import load_model_file
from kzoo.train.determinism import seed_everything
from kzoo.train.distribution import decide, worker_index
from kzoo.train.loop import fit_plan, plan, steps_per_epoch
from kzoo.train.model import build_finetune_model, build_model
from kzoo.train.multiworker import evaluate_locally
from kzoo.versions import package_versions

PRETRAINED = "pretrained.keras"
PROBE = 256  # examples in the fixed batch the monitors read


@dataclass
class RunResult:
    """What a run returns: the metrics written to `metrics.json`, and where the run lives."""

    metrics: dict
    out_dir: str
    history: list = field(default_factory=list)
    model: object = None


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch over every stage, for a steady-state throughput without the first."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def prepare(recipe, setup, name=None, cache_dir=None):
    """The recipe's data (or [finetune.pretrain]'s `name`) at the run's global batch size, framed
    for fine-tuning; `cache_dir` (the run folder) is where `data.cache = "disk"` writes."""
    d = recipe.data
    splits = kdata.load(name or d.dataset, setup.batch_size, d.data_dir or None, d.validation_split, d.test_split,
                        d.split_seed, recipe.seed, (d.image_size or None) if name is None else None, d.cache,
                        d.shuffle_buffer, d.eval_batch_size or None, cache_dir=cache_dir)
    if recipe.finetune.stages and name is None:
        splits = frame(splits, recipe.finetune, d.split_seed)
    return splits


def build(recipe, data, setup, pretrained=None, trust_model=False):
    """The recipe's model (its [finetune] model for a staged plan), built in the strategy scope."""
    with setup.scope():
        if recipe.finetune.stages:
            return build_finetune_model(recipe, data, pretrained, trust_model)
        return build_model(recipe, data)


def recipe_callbacks(recipe, data, setup, out_dir, first=()):
    """`(factory, made)`: `factory()` builds a stage's callbacks afresh for `fit_plan` (`first`, a
    `LearningRateLogger`, then the recipe's, which may write into `out_dir`); `made` holds the
    last list built."""
    context = RunContext(recipe=recipe, out_dir=out_dir, steps_per_epoch=steps_per_epoch(recipe, data, setup),
                         probe=data.sample(PROBE))
    made = []

    def factory():
        made[:] = [LearningRateLogger(), *first] + build_callbacks(recipe.callbacks, context)
        return made

    return factory, made


def evaluate(model, data, setup):
    """`(test loss, test accuracy)`."""
    if setup.multiworker:  # in-memory data only (checked at the start)
        return evaluate_locally(model, data.arrays.x_test, data.arrays.y_test)
    return model.evaluate(data.test, verbose=0)


def train(recipe, run_dir, verbose=2, trust_model=False, strategy=None) -> RunResult:
    """Trains a recipe into an open `RunDir` and writes its artifacts (`recipe.toml`, `history.csv`,
    `model.keras`, plots, `metrics.json` last, `report.html`); returns a `RunResult`. A run killed
    part-way resumes when run again into the same folder."""
    setup = decide(recipe, strategy)
    seed_everything(recipe.seed, recipe.deterministic)
    data = prepare(recipe, setup, cache_dir=run_dir.path)
    run_dir.write_text("recipe.toml", recipe.to_toml())  # before backup/: a resume checks it there
    backup_dir = run_dir.file(BACKUP)
    extra, pretrained, ft = {}, None, recipe.finetune
    if ft.pretrain.dataset:
        extra.update(cached_result(backup_dir, "pretrain", lambda: _pretrain(recipe, setup, run_dir, verbose)))
        pretrained = load_model_file(run_dir.file(PRETRAINED))  # as a resumed run reads it
    if ft.scratch_baseline:
        extra.update(cached_result(backup_dir, "scratch", lambda: _scratch(recipe, data, setup, verbose)))
    seed_everything(recipe.seed, recipe.deterministic)  # the same start whatever ran (or was kept) above
    model = build(recipe, data, setup, pretrained, trust_model)
    timer = EpochTimer()
    callbacks, made = recipe_callbacks(recipe, data, setup, run_dir.path, [timer])
    result = fit_plan(model, recipe, data, setup, backup_dir, callbacks, verbose=verbose)
    metrics = {**run_metrics(recipe, data, setup, model, result, timer.times, made), **extra}
    _finish(run_dir, recipe, model, result, metrics, made)
    return RunResult(metrics=metrics, out_dir=run_dir.path, history=result.rows, model=model)


def _finish(run_dir, recipe, model, result, metrics, callbacks):
    run_dir.write_csv("history.csv", result.rows)
    run_dir.save_model(model)
    title = f"{recipe.name}: test accuracy {metrics['test_accuracy']:.4f}"
    if "scratch_test_accuracy" in metrics:
        title += f" (from scratch {metrics['scratch_test_accuracy']:.4f})"
    plots.plot_curves(result.rows, run_dir.file("curves.png"), title=title, boundaries=result.boundaries)
    write_dynamics_plot(callbacks, run_dir.file("dynamics.png"), title=recipe.name)
    run_dir.write_json("metrics.json", metrics)  # last: its presence marks a finished run
    run_dir.remove_backup()
    write_report(run_dir.path)


def fit_once(recipe, data, setup, verbose, changes=None):
    """Trains the recipe without its stage plan and callbacks (and with the fields in `changes`) on
    `data`, with no checkpoints: pretraining and the scratch baseline. Returns (model, test accuracy)."""
    recipe = dataclasses.replace(recipe, finetune=dataclasses.replace(recipe.finetune, stages=[]), callbacks={},
                                 **(changes or {}))
    seed_everything(recipe.seed, recipe.deterministic)
    model = build(recipe, data, setup)
    fit_plan(model, recipe, data, setup, None, verbose=verbose)
    _, accuracy = evaluate(model, data, setup)
    return model, round(float(accuracy), 6)


def _pretrain(recipe, setup, run_dir, verbose):
    """Trains [model] on [finetune.pretrain]'s dataset into `pretrained.keras`; returns its metrics."""
    p, d = recipe.finetune.pretrain, recipe.data
    data_cfg = dataclasses.replace(d, augment=type(d.augment)(), batch_size=p.batch_size or d.batch_size)
    pre_setup = dataclasses.replace(setup, batch_size=data_cfg.batch_size)
    data = prepare(dataclasses.replace(recipe, data=data_cfg), pre_setup, name=p.dataset)
    if verbose:
        print(f"pretraining {recipe.model['name']} on {p.dataset} for {p.epochs} epochs")
    model, accuracy = fit_once(recipe, data, pre_setup, verbose, {
        "data": data_cfg, "epochs": p.epochs, "optimizer": dataclasses.replace(recipe.optimizer, lr=p.lr)})
    run_dir.save_model(model, PRETRAINED)
    return {"pretrain_test_accuracy": accuracy, "pretrain_dataset": p.dataset}


def _scratch(recipe, data, setup, verbose):
    """The same architecture from scratch on the same data for the plan's total epochs."""
    name = recipe.finetune.backbone or recipe.model["name"]
    if verbose:
        print(f"baseline: {name} from scratch for {recipe.epochs} epochs")
    changes = {"model": {"name": name}} if recipe.finetune.backbone else {}
    return {"scratch_test_accuracy": fit_once(recipe, data, setup, verbose, changes)[1]}


def run_metrics(recipe, data, setup, model, result, epoch_times, callbacks=()) -> dict:
    """What `metrics.json` holds: the test metrics, the throughput at steady state (the first epoch
    left out), the stage plan, the workers and what the callbacks report."""
    info, rows = data.info, result.rows
    test_loss, test_accuracy = evaluate(model, data, setup)
    steady = epoch_times[1:] or epoch_times
    metrics = {
        "recipe": recipe.name,
        "dataset": info.name,
        "model": recipe.model["name"],
        "params": int(model.count_params()),
        "test_accuracy": round(float(test_accuracy), 6),
        "test_loss": round(float(test_loss), 6),
        "best_val_accuracy": round(max((r.get("val_accuracy", 0.0) for r in rows), default=0.0), 6),
        "epochs_run": len(rows),
        "train_seconds": round(result.seconds, 3),
        "samples_per_second": round(info.num_train * len(steady) / max(sum(steady), 1e-9), 1),
        "num_train": info.num_train,
        "num_val": info.num_val,
        "num_test": info.num_test,
        "seed": recipe.seed,
        "versions": package_versions(),
    }
    if recipe.finetune.stages:
        metrics.update({"model": model.name, "backbone": recipe.finetune.backbone or recipe.model["name"],
                        "stages": [s.spelling() for s in plan(recipe)[0]], "stage_boundaries": result.boundaries})
    if setup.multiworker:
        index, workers = worker_index()
        metrics.update({"strategy": "multiworker", "replicas": setup.replicas, "worker_index": index,
                        "num_workers": workers})
    for cb in callbacks:
        metrics.update(getattr(cb, "kzoo_metrics", None) or {})
    if result.resumed_after:
        metrics["resumed_after_epoch"] = result.resumed_after
    return metrics
