"""The training engine: `train(recipe, run_dir)`, from a recipe to a finished run folder, for
`kzoo run`, staged fine-tuning and multi-worker training. Every path sets up through one
`kzoo.train.session.Session`; a tuner trial and the learning-rate finder use it with
`fit_plan` and `compile_stage`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import keras

from kzoo import plots
from kzoo.callbacks.registry import end_of_run, preflight
from kzoo.cpu_threads import apply_threads, current_plan
from kzoo.plots_dynamics import write_dynamics_plot
from kzoo.report import write_report
from kzoo.runs import BACKUP, cached_result
from kzoo.safe_load import load_model_file
from kzoo.train.distribution import worker_index
from kzoo.train.loop import fit_plan, plan, recipe_loss
from kzoo.train.metrics import metric_names
from kzoo.train.multiworker import evaluate_locally
from kzoo.train.session import PROBE, Session
from kzoo.versions import package_versions

PRETRAINED = "pretrained.keras"
__all__ = ["PROBE", "PRETRAINED", "RunResult", "Session", "evaluate", "fit_once", "run_metrics", "train"]


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


def evaluate(model, data, setup, recipe=None) -> dict:
    """`{"loss": ..., "accuracy": ..., <each of the recipe's metrics>: ...}` on the test split,
    with the compiled loss (the recipe's `[loss]`) and metrics."""
    if setup.multiworker:  # streamed on every worker: each holds the same weights
        return evaluate_locally(model, data.test, metric_names(recipe) if recipe is not None else ("accuracy",))
    return model.evaluate(data.test, verbose=0, return_dict=True)


def train(recipe, run_dir, verbose=2, trust_model=False, strategy=None) -> RunResult:
    """Trains a recipe into an open `RunDir` and writes its artifacts (`recipe.toml`, `history.csv`,
    `model.keras`, plots, `metrics.json` last, `report.html`); returns a `RunResult`. A run killed
    part-way resumes when run again into the same folder."""
    preflight(recipe)  # a tracking server that does not answer fails here, before any data or training
    session = Session(recipe, strategy, cache_dir=run_dir.path)
    recipe_loss(recipe, session.data)  # a class_weight naming no class of the dataset: refused before training
    run_dir.write_text("recipe.toml", recipe.to_toml())  # before backup/: a resume checks it there
    backup_dir = run_dir.file(BACKUP)
    extra, pretrained, ft = {}, None, recipe.finetune
    if ft.pretrain.dataset:
        extra.update(cached_result(backup_dir, "pretrain", lambda: _pretrain(session, run_dir, verbose)))
        pretrained = load_model_file(run_dir.file(PRETRAINED))  # as a resumed run reads it
    if ft.scratch_baseline:
        extra.update(cached_result(backup_dir, "scratch", lambda: _scratch(session, verbose)))
    model = session.build(pretrained=pretrained, trust_model=trust_model)  # seeded: the same start whatever ran above
    timer = EpochTimer()
    callbacks, made = session.callbacks(run_dir.path, [timer])
    data, setup = session.data, session.setup
    result = fit_plan(model, recipe, data, setup, backup_dir, callbacks, verbose=verbose)
    metrics = {**run_metrics(recipe, data, setup, model, result, timer.times, made), **extra}
    _finish(run_dir, recipe, model, result, metrics, made)
    end_of_run(made, "completed", run_dir.path, metrics)  # MLflow: artifacts, then the run ends
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


def fit_once(session, verbose, changes=None):
    """Trains the session's recipe without its stage plan and callbacks (and with the fields in
    `changes`) on its data, with no checkpoints: pretraining and the scratch baseline. Returns
    (model, test accuracy)."""
    recipe = session.replaced(finetune=dataclasses.replace(session.recipe.finetune, stages=[]), callbacks={},
                              **(changes or {}))
    model = session.build(recipe)
    fit_plan(model, recipe, session.data, session.setup, None, verbose=verbose)
    return model, round(float(evaluate(model, session.data, session.setup, recipe)["accuracy"]), 6)


def _pretrain(session, run_dir, verbose):
    """Trains [model] on [finetune.pretrain]'s dataset into `pretrained.keras`; returns its metrics."""
    recipe, setup = session.recipe, session.setup
    p, d = recipe.finetune.pretrain, recipe.data
    data_cfg = dataclasses.replace(d, augment=type(d.augment)(), batch_size=p.batch_size or d.batch_size)
    # The class weights belong to the target's classes; pretraining's dataset has its own.
    pre_recipe = dataclasses.replace(recipe, data=data_cfg, epochs=p.epochs,
                                     optimizer=dataclasses.replace(recipe.optimizer, lr=p.lr),
                                     loss=dataclasses.replace(recipe.loss, class_weight="none"))
    pre = Session(pre_recipe, dataset=p.dataset, setup=dataclasses.replace(setup, batch_size=data_cfg.batch_size))
    if verbose:
        print(f"pretraining {recipe.model['name']} on {p.dataset} for {p.epochs} epochs")
    model, accuracy = fit_once(pre, verbose)
    run_dir.save_model(model, PRETRAINED)
    return {"pretrain_test_accuracy": accuracy, "pretrain_dataset": p.dataset}


def _scratch(session, verbose):
    """The same architecture from scratch on the same data for the plan's total epochs."""
    recipe = session.recipe
    name = recipe.finetune.backbone or recipe.model["name"]
    if verbose:
        print(f"baseline: {name} from scratch for {recipe.epochs} epochs")
    changes = {"model": {"name": name}} if recipe.finetune.backbone else {}
    return {"scratch_test_accuracy": fit_once(session, verbose, changes)[1]}


def run_metrics(recipe, data, setup, model, result, epoch_times, callbacks=()) -> dict:
    """What `metrics.json` holds: the test metrics, the throughput at steady state (the first epoch
    left out), the stage plan, the workers and what the callbacks report."""
    info, rows = data.info, result.rows
    test = evaluate(model, data, setup, recipe)
    steady = epoch_times[1:] or epoch_times
    metrics = {
        "recipe": recipe.name,
        "dataset": info.name,
        "model": recipe.model["name"],
        "params": int(model.count_params()),
        "test_accuracy": round(float(test["accuracy"]), 6),
        "test_loss": round(float(test["loss"]), 6),
        "best_val_accuracy": round(max((r.get("val_accuracy", 0.0) for r in rows), default=0.0), 6),
        "epochs_run": len(rows),
        "train_seconds": round(result.seconds, 3),
        "samples_per_second": round(info.num_train * len(steady) / max(sum(steady), 1e-9), 1),
        "num_train": info.num_train,
        "num_val": info.num_val,
        "num_test": info.num_test,
        "class_names": [str(c) for c in info.class_names],
        "seed": recipe.seed,
        "versions": package_versions(),
        "threads": (current_plan() or apply_threads(recipe)).to_dict(),  # they change some kernels' sums
    }
    for name in metric_names(recipe)[1:]:
        metrics[f"test_{name}"] = round(float(test[name]), 6)
        metrics[f"best_val_{name}"] = round(max((r.get(f"val_{name}", 0.0) for r in rows), default=0.0), 6)
    if recipe.checkpoint == "best":  # the weights saved and tested are this epoch's
        metrics.update({"checkpoint": "best", "best_epoch": result.best_epoch})
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
