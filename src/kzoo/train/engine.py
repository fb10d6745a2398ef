"""The training engine: data, model, compile, callbacks, a plan of stages, the run folder.

`train(recipe, run_dir)` is `kzoo run` (a plan of one stage), staged fine-tuning (a plan of N,
with [finetune.pretrain] and the scratch baseline cached in the run folder) and multi-worker
training (another step function in the same loop). A tuner trial is `prepare` + `build` +
`fit_plan` in its trial folder, and the learning-rate finder is `prepare` + `build` +
`compile_stage`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import keras

from kzoo.callbacks import LearningRateLogger, RunContext, build_callbacks
from kzoo.runs import BACKUP, cached_result
from kzoo.train.determinism import seed_everything
from kzoo.train.distribution import decide, worker_index
from kzoo.train.loop import fit_plan, keras_fit, plan, steps_per_epoch
from kzoo.train.model import (
    STATS_SAMPLE,
    build_finetune_model,
    build_model,
    load_backbone_file,
    with_model,
)

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
    """The recipe's data (or [finetune.pretrain]'s `name`) at the run's global batch size, with
    fine-tuning's framing applied as pipeline steps. Folders and tensorflow-datasets stream
    from disk; `cache_dir` (the run folder) is where `data.cache = "disk"` writes."""
    from kzoo import data as kdata
    from kzoo.data.framing import frame

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


def context_for(recipe, data, out_dir, steps_per_epoch) -> RunContext:
    x, y = data.sample(PROBE)
    return RunContext(recipe=recipe, out_dir=out_dir, steps_per_epoch=steps_per_epoch, probe=(x, y))


def evaluate(model, data, setup):
    """`(test loss, test accuracy)`."""
    if setup.multiworker:
        from kzoo.train.multiworker import (
            evaluate_locally,  # in-memory data only (checked at the start)
        )

        return evaluate_locally(model, data.arrays.x_test, data.arrays.y_test)
    return model.evaluate(data.test, verbose=0)


def train(recipe, run_dir, verbose=2, trust_model=False, strategy=None) -> RunResult:
    """Trains a recipe into an open `RunDir` and writes its artifacts; returns a `RunResult`.

    Writes `recipe.toml`, `history.csv` (with `stage` and `trainable` columns for a staged plan),
    `model.keras`, `curves.png` (dashed lines at stage boundaries), `dynamics.png` when a monitor
    sampled, `metrics.json` (last: its presence marks a finished run) and `report.html`. A run
    killed part-way resumes when run again into the same folder.
    """
    setup = decide(recipe, strategy)
    seed_everything(recipe.seed, recipe.deterministic)
    data = prepare(recipe, setup, cache_dir=run_dir.path)
    run_dir.write_text("recipe.toml", recipe.to_toml())  # before backup/: a resume checks it there
    backup_dir = run_dir.file(BACKUP)
    extra, pretrained, ft = {}, None, recipe.finetune
    if ft.pretrain.dataset:
        extra.update(cached_result(backup_dir, "pretrain", lambda: _pretrain(recipe, setup, run_dir, verbose)))
        pretrained = load_backbone_file(run_dir.file(PRETRAINED))  # as a resumed run reads it
    if ft.scratch_baseline:
        extra.update(cached_result(backup_dir, "scratch", lambda: _scratch(recipe, data, setup, verbose)))
    seed_everything(recipe.seed, recipe.deterministic)  # the same start whatever ran (or was kept) above
    model = build(recipe, data, setup, pretrained, trust_model)

    timer, made = EpochTimer(), []
    context = context_for(recipe, data, run_dir.path, steps_per_epoch(recipe, data, setup))

    def callbacks():
        made[:] = [LearningRateLogger(), timer] + build_callbacks(recipe.callbacks, context)
        return made

    step = keras_fit
    if setup.multiworker:
        from kzoo.train.multiworker import fit_multiworker as step
    result = fit_plan(model, recipe, data, setup, backup_dir, callbacks, verbose=verbose, fit=step)
    test_loss, test_accuracy = evaluate(model, data, setup)
    metrics = run_metrics(recipe, data.info, model, test_loss, test_accuracy, result.rows, result.seconds, timer.times)
    if recipe.finetune.stages:
        metrics.update({"model": model.name, "backbone": ft.backbone or recipe.model["name"],
                        "stages": [s.spelling() for s in plan(recipe)[0]], "stage_boundaries": result.boundaries})
    if setup.multiworker:
        index, workers = worker_index()
        metrics.update({"strategy": "multiworker", "replicas": setup.replicas, "worker_index": index,
                        "num_workers": workers})
    metrics.update(extra)
    for cb in made:
        metrics.update(getattr(cb, "kzoo_metrics", None) or {})
    if result.resumed_after:
        metrics["resumed_after_epoch"] = result.resumed_after
    _finish(run_dir, recipe, model, result, metrics, made, extra)
    return RunResult(metrics=metrics, out_dir=run_dir.path, history=result.rows, model=model)


def _finish(run_dir, recipe, model, result, metrics, callbacks, extra):
    from kzoo.plots import plot_curves
    from kzoo.plots_dynamics import write_dynamics_plot
    from kzoo.report import write_report

    run_dir.write_csv("history.csv", result.rows)
    run_dir.save_model(model)
    title = f"{recipe.name}: test accuracy {metrics['test_accuracy']:.4f}"
    if "scratch_test_accuracy" in extra:
        title += f" (from scratch {extra['scratch_test_accuracy']:.4f})"
    plot_curves(result.rows, run_dir.file("curves.png"), title=title, boundaries=result.boundaries)
    write_dynamics_plot(callbacks, run_dir.file("dynamics.png"), title=recipe.name)
    run_dir.write_json("metrics.json", metrics)  # last: its presence marks a finished run
    run_dir.remove_backup()
    write_report(run_dir.path)


def fit_once(recipe, data, setup, verbose):
    """Trains the recipe's plain model on `data` with no checkpoints or callbacks; returns
    (model, test accuracy)."""
    seed_everything(recipe.seed, recipe.deterministic)
    model = build(recipe, data, setup)
    fit_plan(model, recipe, data, setup, None, verbose=verbose)
    _, accuracy = evaluate(model, data, setup)
    return model, round(float(accuracy), 6)


def _plain(recipe, **changes):
    """The recipe without its stage plan (and with `changes`): what pretraining and the scratch
    baseline train."""
    ft = dataclasses.replace(recipe.finetune, stages=[])
    return dataclasses.replace(recipe, finetune=ft, **changes)


def _pretrain(recipe, setup, run_dir, verbose):
    """Trains the recipe's [model] on [finetune.pretrain]'s dataset into `pretrained.keras`;
    returns the metrics it adds."""
    p, d = recipe.finetune.pretrain, recipe.data
    plain = _plain(recipe, data=dataclasses.replace(d, augment=type(d.augment)(), batch_size=p.batch_size or d.batch_size),
                   epochs=p.epochs, optimizer=dataclasses.replace(recipe.optimizer, lr=p.lr), callbacks={})
    pre_setup = dataclasses.replace(setup, batch_size=plain.data.batch_size)
    data = prepare(plain, pre_setup, name=p.dataset)
    if verbose:
        print(f"pretraining {recipe.model['name']} on {p.dataset} for {p.epochs} epochs")
    model, accuracy = fit_once(plain, data, pre_setup, verbose)
    run_dir.save_model(model, PRETRAINED)
    return {"pretrain_test_accuracy": accuracy, "pretrain_dataset": p.dataset}


def _scratch(recipe, data, setup, verbose):
    """The same architecture trained from scratch on the same data for the plan's total epochs;
    returns the metric it adds."""
    plain = _plain(recipe, callbacks={})
    if recipe.finetune.backbone:
        plain = with_model(plain, recipe.finetune.backbone)
    if verbose:
        print(f"baseline: {plain.model['name']} from scratch for {recipe.epochs} epochs")
    _, accuracy = fit_once(plain, data, setup, verbose)
    return {"scratch_test_accuracy": accuracy}


def run_metrics(recipe, info, model, test_loss, test_accuracy, rows, train_seconds, epoch_times) -> dict:
    """What `metrics.json` holds for every run; throughput is steady state (first epoch left out)."""
    from kzoo.versions import package_versions

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


__all__ = ["STATS_SAMPLE", "RunResult", "build", "evaluate", "fit_once", "prepare", "run_metrics", "train"]
