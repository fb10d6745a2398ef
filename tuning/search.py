"""`kzoo tune`: a KerasTuner search over a recipe's [tune] space, resumable and distributable.

KerasTuner runs the search (its oracles, its trial state on disk, its chief/worker engine);
kzoo adds what its users miss: one progress line per trial with an ETA, failed trials
recorded with their reason while the search goes on, memory released between trials,
trials.csv / trials.png / a ranked table, and the best trial exported as a recipe.

Output directory (`--out`, default `runs/tune-<recipe>`):
    search.toml   the searched recipe (a later run must match it to resume)
    search/       KerasTuner's state: oracle.json, trial_*/trial.json
    trials.csv    one row per finished trial: score, values, status, reason, seconds, worker
    trials.png    score per trial and the best so far
    best.toml     the best trial as a recipe: `kzoo run best.toml` reproduces it
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import socket
import time
from dataclasses import dataclass, field

import keras
import keras_tuner
import tensorflow as tf
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.oracle import synchronized

from kzoo.errors import RecipeError, RunDirError, UserError, closest
from kzoo.recipes.loader import apply_overrides, load
from kzoo.recipes.schema import build_recipe
from kzoo.runs import RunDir, atomic_write, write_csv
from kzoo.train.distribution import apply_precision, make_strategy
from kzoo.tuning import distributed
from kzoo.tuning.hypermodel import RecipeHyperModel, TrialFailed

TUNERS = ("random", "bayesian", "hyperband", "grid")
ROLES = ("chief", "worker")


@dataclass
class SearchResult:
    """What `search` returns: the finished trials (best first), the best recipe, the directory."""

    trials: list = field(default_factory=list)
    best: dict | None = None
    best_recipe: object = None
    out_dir: str = ""
    objective: str = "val_accuracy"


# ---------------------------------------------------------------------------------------------
# Bookkeeping oracle: KerasTuner's oracle plus timing, worker, reason, progress and stale trials.


class _TrialBook:
    """Mixed into a KerasTuner oracle class; everything it adds is saved with the oracle."""

    def _kzoo_init(self):
        self.kzoo_extras = {}  # trial_id -> {"seconds", "tuner", "reason", "started"}
        self.kzoo_seen_tuners = set()
        self.kzoo_reporter = None
        self.kzoo_handouts = {}  # trial_id -> times handed out again after a timeout
        self.kzoo_last_contact = None  # monotonic time of the last trial request

    @synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        self.kzoo_last_contact = time.monotonic()
        if trial.status == trial_module.TrialStatus.STOPPED and (self.ongoing_trials or self._retry_queue):
            # Other trials are still out, and one may come back for a retry (its worker may have
            # died): keep this worker asking instead of letting it go.
            self.tuner_ids.add(tuner_id)
            return trial_module.Trial(self.get_space(), trial_id=trial.trial_id,
                                      status=trial_module.TrialStatus.IDLE)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self.kzoo_seen_tuners.add(tuner_id)
            self.kzoo_extras.setdefault(trial.trial_id, {})
            self.kzoo_extras[trial.trial_id].update(tuner=tuner_id, started=time.time(), clock=time.monotonic())
        return trial

    @synchronized
    def end_trial(self, trial):
        if trial.trial_id in self.end_order:
            # a second report of a settled trial (it was handed out twice): keep the first
            for tuner_id, ongoing in list(self.ongoing_trials.items()):
                if ongoing.trial_id == trial.trial_id:
                    self.ongoing_trials.pop(tuner_id)
            return
        if trial.trial_id in self._retry_queue:
            self._retry_queue.remove(trial.trial_id)  # the presumed-dead worker finished after all
        super().end_trial(trial)
        if trial.trial_id not in self.end_order:
            return  # sent for a retry
        extra = self.kzoo_extras.setdefault(trial.trial_id, {})
        if "clock" in extra:
            extra["seconds"] = round(time.monotonic() - extra.pop("clock"), 2)
        stored = self.trials[trial.trial_id]
        if stored.status != trial_module.TrialStatus.COMPLETED:
            extra["reason"] = failure_reason(stored.message) if stored.message else \
                f"failed on {extra.get('tuner', 'a worker')} (the reason is in its log)"
        self.save()
        if self.kzoo_reporter is not None:
            self.kzoo_reporter(self, stored)

    def populate_space(self, trial_id):
        # The first trial of a random or Bayesian search is the recipe as written (every space's
        # default), so the search's best is never worse than the untuned recipe.
        if getattr(self, "kzoo_default_first", False) and not self._tried_so_far:
            values = {}
            hps = keras_tuner.HyperParameters()
            for hp in self.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = values[hp.name] = hp.default
            return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        return super().populate_space(trial_id)

    @synchronized
    def expire_stale(self, timeout: float) -> list[str]:
        """Hands out again (once), then fails, trials with no result after `timeout` seconds."""
        lines = []
        now = time.monotonic()
        for tuner_id, trial in list(self.ongoing_trials.items()):
            extra = self.kzoo_extras.get(trial.trial_id, {})
            if now - extra.get("clock", now) < timeout:
                continue
            self.ongoing_trials.pop(tuner_id)
            self.tuner_ids.discard(tuner_id)
            if trial.trial_id in self.end_order:
                continue  # settled meanwhile by the worker it was first given to
            handed = self.kzoo_handouts.get(trial.trial_id, 0)
            if handed < 1:
                self.kzoo_handouts[trial.trial_id] = handed + 1
                self._retry_queue.append(trial.trial_id)
                extra.pop("clock", None)
                lines.append(f"chief: trial {trial.trial_id} on {tuner_id} gave no result in {timeout:g} s; "
                             "handing it out again")
            else:
                trial.status = trial_module.TrialStatus.FAILED
                trial.message = f"no result from worker {tuner_id} within {timeout:g} s (twice)"
                self.end_order.append(trial.trial_id)
                extra.update(reason=trial.message, seconds=round(now - extra.pop("clock", now), 2))
                self._save_trial(trial)
                lines.append(f"chief: trial {trial.trial_id} failed: {trial.message}")
                if self.kzoo_reporter is not None:
                    self.kzoo_reporter(self, trial)
            self.save()
        return lines

    def kzoo_search_over(self) -> bool:
        return bool(self.max_trials) and len(self.end_order) >= self.max_trials and not self._retry_queue

    def get_state(self):
        state = super().get_state()
        extras = {k: {kk: vv for kk, vv in v.items() if kk != "clock"} for k, v in self.kzoo_extras.items()}
        state["kzoo"] = {"extras": extras, "handouts": self.kzoo_handouts}
        return state

    def set_state(self, state):
        super().set_state(state)
        self.kzoo_last_contact = None
        kzoo = state.get("kzoo", {})
        self.kzoo_extras = kzoo.get("extras", {})
        self.kzoo_handouts = kzoo.get("handouts", {})


_ORACLE_CLASSES = {}


def oracle_class(kind: str):
    """The KerasTuner oracle for `random|bayesian|hyperband|grid`, with kzoo's bookkeeping."""
    if kind not in _ORACLE_CLASSES:
        base = {"random": keras_tuner.oracles.RandomSearchOracle,
                "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
                "hyperband": keras_tuner.oracles.HyperbandOracle,
                "grid": keras_tuner.oracles.GridSearchOracle}[kind]

        def __init__(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)
            self._kzoo_init()

        attrs = {"__init__": __init__, "kzoo_default_first": kind in ("random", "bayesian")}
        _ORACLE_CLASSES[kind] = type(f"Kzoo{base.__name__}", (_TrialBook, base), attrs)
    return _ORACLE_CLASSES[kind]


def failure_reason(message) -> str:
    """The one line of a failed trial's traceback that says why."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    if not lines:
        return "failed"
    head, sep, tail = lines[-1].partition(": ")
    cls = head.rsplit(".", 1)[-1]
    if not sep or " " in head:
        reason = lines[-1]
    elif cls == "TrialFailed":
        reason = tail
    elif cls == "ResourceExhaustedError":
        reason = f"out of memory: {tail}"
    else:
        reason = f"{cls}: {tail}"
    return reason[:240]


# ---------------------------------------------------------------------------------------------
# The tuner: KerasTuner's Tuner running RecipeHyperModel trials, memory released between them.


class KzooTuner(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` whose trials are recipe runs; works with every kzoo oracle."""

    def __init__(self, *args, verbose: int = 1, chief_options=None, **kwargs):
        self.kzoo_verbose = verbose
        self.chief_options = chief_options or {}
        super().__init__(*args, **kwargs)

    def _populate_initial_space(self):
        # Declaring every space once registers all of them, conditional ones included, without
        # building a model per conditional scope as KerasTuner's default does.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def pre_create_trial(self):
        # KerasTuner asks again at once when the oracle answers IDLE; pace those requests.
        if getattr(self, "_kzoo_waiting", False):
            time.sleep(1.0)
        self._kzoo_waiting = True

    def on_trial_begin(self, trial):
        self._kzoo_waiting = False
        super().on_trial_begin(trial)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        self.hypermodel.trial_dir = self.get_trial_dir(trial.trial_id)
        model = None
        try:
            model = self._try_build(hp)
            return self.hypermodel.fit(hp, model)
        except tf.errors.ResourceExhaustedError as e:
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0][:200]}") from None
        finally:
            del model
            keras.backend.clear_session()
            gc.collect()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self._is_worker() and self.kzoo_verbose:
            settled = self.oracle.get_trial(trial.trial_id)  # the chief holds the score
            score = settled.score if settled.status == "COMPLETED" else None
            # the reason stays here: KerasTuner's gRPC messages carry no trial message
            what = f"{self.oracle.objective.name}={score:.4f}" if score is not None else \
                f"{settled.status}" + (f": {failure_reason(trial.message)}" if trial.message else "")
            print(f"{self.tuner_id}: trial {trial.trial_id} {format_values(trial.hyperparameters.values)}  {what}",
                  flush=True)

    def search(self, *args, **kwargs):
        if dist_utils.is_chief_oracle():
            self.save()
            distributed.serve(self.oracle, os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"]),
                  **self.chief_options)
            return
        super().search(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Reporting: progress lines, trials.csv, trials.png, the ranked table.


def format_values(values: dict) -> str:
    parts = []
    for key, value in values.items():
        if key.startswith("tuner/") and key != "tuner/epochs":
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def trial_rows(oracle) -> list[dict]:
    """One dict per finished trial, in the order they finished."""
    rows = []
    extras = getattr(oracle, "kzoo_extras", {})
    name = oracle.objective.name
    for number, trial_id in enumerate(oracle.end_order, 1):
        trial = oracle.trials[trial_id]
        extra = extras.get(trial_id, {})
        completed = trial.status == trial_module.TrialStatus.COMPLETED
        row = {"trial": number, "trial_id": trial_id, "status": str(trial.status).lower(),
               name: round(float(trial.score), 6) if completed and trial.score is not None else None,
               "seconds": extra.get("seconds"), "worker": extra.get("tuner", "")}
        for key, value in trial.hyperparameters.values.items():
            if not key.startswith("tuner/") or key == "tuner/epochs":
                row[key] = value
        row["reason"] = "" if completed else extra.get("reason") or failure_reason(trial.message)
        rows.append(row)
    return rows


def ranked(rows: list[dict], objective: str, direction: str) -> list[dict]:
    done = [r for r in rows if r["status"] == "completed" and r.get(objective) is not None]
    return sorted(done, key=lambda r: r[objective], reverse=direction == "max")


class Progress:
    """Prints one line per finished trial and keeps trials.csv current."""

    def __init__(self, out_dir: str, total, verbose: int = 1):
        self.out_dir = out_dir
        self.total = total
        self.verbose = verbose
        self.start = time.monotonic()
        self.done_at_start = None
        self.callbacks = []

    def __call__(self, oracle, trial):
        rows = trial_rows(oracle)
        write_csv(os.path.join(self.out_dir, "trials.csv"), rows, ["trial"])
        if self.done_at_start is None:
            self.done_at_start = len(rows) - 1
        name, direction = oracle.objective.name, oracle.objective.direction
        best = ranked(rows, name, direction)
        row = next(r for r in rows if r["trial_id"] == trial.trial_id)
        elapsed = time.monotonic() - self.start
        done_now = len(rows) - self.done_at_start
        total = self.total or "?"
        eta = ""
        if self.total:
            remaining = max(self.total - len(rows), 0)
            eta = f"  eta {_duration(elapsed / max(done_now, 1) * remaining)}"
        score = f"{name}={row[name]:.4f}" if row[name] is not None else f"FAILED ({row['reason']})"
        best_txt = f"best {best[0][name]:.4f} (trial {best[0]['trial']})" if best else "best -"
        values = format_values(trial.hyperparameters.values)
        if self.verbose:
            print(f"trial {len(rows)}/{total}  {values}  {score}  {best_txt}  "
                  f"elapsed {_duration(elapsed)}{eta}", flush=True)
        for callback in self.callbacks:
            callback(row)


def plot_trials(rows: list[dict], objective: str, direction: str, path: str, title: str = ""):
    """Score per trial (failed trials marked), and the best-so-far line."""
    from kzoo.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = [r["trial"] for r in rows if r.get(objective) is not None]
    ys = [r[objective] for r in rows if r.get(objective) is not None]
    ax.plot(xs, ys, "o", color="tab:blue", label=objective)
    best, best_line = None, []
    for x, y in zip(xs, ys):
        best = y if best is None or (y > best if direction == "max" else y < best) else best
        best_line.append(best)
    if xs:
        ax.step(xs, best_line, where="post", color="tab:orange", label="best so far")
    failed = [r["trial"] for r in rows if r.get(objective) is None]
    if failed:
        floor = min(ys) if ys else 0.0
        ax.plot(failed, [floor] * len(failed), "x", color="tab:red", label="failed")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    save_figure(fig, path)


def print_ranking(rows: list[dict], objective: str, direction: str, top: int = 5):
    from kzoo.tables import print_table

    best = ranked(rows, objective, direction)[:top]
    if not best:
        print("no trial finished with a score")
        return
    skip = ("trial", "trial_id", "status", objective, "seconds", "worker", "reason")
    keys = []
    for r in best:
        keys += [k for k in r if k not in skip and k not in keys]
    table = []
    for rank, r in enumerate(best, 1):
        values = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else "-" if r.get(k) is None else str(r[k])
                  for k in keys]
        table.append([str(rank), str(r["trial"]), f"{r[objective]:.4f}"] + values)
    print_table(table, ["rank", "trial", objective] + keys)


# ---------------------------------------------------------------------------------------------
# The search itself.


def _infer_direction(objective: str) -> str:
    return "min" if any(w in objective for w in ("loss", "error")) else "max"


def best_recipe(hypermodel, trial, objective: str, score, searched: int):
    """The recipe of `trial`, named `<recipe>-best`, ready for `kzoo run`."""
    recipe, _ = hypermodel.trial_recipe(trial.hyperparameters.copy())
    return dataclasses.replace(
        recipe, name=f"{hypermodel.recipe.name}-best",
        description=f"Best of {searched} trials of `kzoo tune {hypermodel.recipe.name}`: {objective}={score:.4f}")


def _check_resumable(out: str, recipe, settings: dict, overwrite: bool):
    """Refuses to continue a search of another recipe or with another tuner in `out`."""
    path = os.path.join(out, "search.json")
    if overwrite or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    if stored.get("recipe") != json.loads(json.dumps(recipe.to_dict())):
        raise RunDirError(f"{out} holds a search of a different recipe (or [tune] space). "
                          "Pass --overwrite to start afresh, or choose another --out.")
    for key in ("tuner", "objective"):
        if stored.get(key) != settings[key]:
            raise RunDirError(f"{out} holds a search with {key}={stored.get(key)}; pass --overwrite to start "
                              f"afresh. Received: {key}={settings[key]}")


def search(recipe, tuner: str = "random", max_trials: int = 10, max_epochs: int | None = None,
           objective: str = "val_accuracy", out: str | None = None, overwrite: bool = False,
           strategy: str | None = None, role: str | None = None, oracle: str | None = None,
           tuner_id: str | None = None, export: str | None = None, verbose: int = 1,
           poll_seconds: float = 2.0, wait_workers: float = 600.0, trial_timeout: float = 3600.0,
           connect_timeout: float = 120.0, on_trial_end=None) -> SearchResult:
    """Searches a recipe's [tune] space with KerasTuner.

    Running it again with the same `out` continues the search: finished trials are kept, an
    interrupted trial is run again from scratch; `overwrite=True` starts afresh.

    Args:
        recipe: a `Recipe` with a [tune] section, or a shipped name / TOML path.
        tuner: `random`, `bayesian`, `hyperband` or `grid`. Defaults to `"random"`.
        max_trials: trials to run (Hyperband decides its own number). Defaults to `10`.
        max_epochs: epochs per trial (Hyperband: the largest budget). Defaults to the recipe's.
        objective: the metric to optimize; its direction is inferred (`loss` -> min).
            Defaults to `"val_accuracy"`.
        out: the search directory. Defaults to `runs/tune-<recipe>`.
        overwrite: discard an earlier search in `out`. Defaults to `False`.
        strategy: `auto`, `default`, `mirrored` or `tpu`; each trial builds its model in
            the strategy's scope. Defaults to the recipe's `strategy` field.
        role: `chief` or `worker` for a distributed search, with `oracle="HOST:PORT"`.
            Defaults to `None` (a search in this process).
        tuner_id: a worker's id. Defaults to `worker-<hostname>-<pid>`.
        export: also write the best trial's recipe to this TOML path. Defaults to `None`.
        poll_seconds, wait_workers, trial_timeout: the chief's bounds (see
            `kzoo.tuning.distributed.serve`). connect_timeout: a worker's bound on each call.
        on_trial_end: called with each finished trial's row (a dict). Defaults to `None`.

    Returns:
        A `SearchResult` (on a worker: only `out_dir`).

    Example:
        >>> result = kzoo.tuning.search("mlp-digits", max_trials=5, max_epochs=5)
        >>> result.best["val_accuracy"], result.best_recipe.optimizer.lr
    """
    if isinstance(recipe, str):
        recipe = load(recipe)
    if tuner not in TUNERS:
        raise RecipeError(f"Unknown tuner '{tuner}'.{closest(tuner, TUNERS)} Valid: {', '.join(TUNERS)}. "
                          f"Received: tuner={tuner}")
    if not recipe.tune:
        raise RecipeError(f"Recipe '{recipe.name}' has no [tune] section to search. Received: tune={{}}")
    if max_trials is None or max_trials < 1:
        raise RecipeError(f"--max-trials must be at least 1. Received: max_trials={max_trials}")
    if max_epochs is not None and max_epochs < 1:
        raise RecipeError(f"--max-epochs must be at least 1. Received: max_epochs={max_epochs}")
    if objective.startswith("val_") and recipe.data.validation_split == 0:
        raise RecipeError(f"objective {objective} needs a validation split, but data.validation_split = 0. "
                          f"Received: objective={objective}")
    if role is not None and role not in ROLES:
        raise UserError(f"--role must be chief or worker. Received: role={role}")
    if (role is None) != (oracle is None):
        raise UserError(f"--role and --oracle go together. Received: role={role}, oracle={oracle}")
    ft = recipe.finetune
    if ft.stages and (ft.pretrain.dataset or ft.scratch_baseline):
        raise RecipeError("kzoo tune trains each trial's stages; run [finetune.pretrain] or scratch_baseline "
                          "with kzoo run, then tune from its model (finetune.backbone = RUN). "
                          f"Received: pretrain.dataset={ft.pretrain.dataset!r}, scratch_baseline={ft.scratch_baseline}")
    if ft.stages and "optimizer.lr" in recipe.tune:
        raise RecipeError("A staged recipe trains at its stages' rates: tune \"finetune.stages\" (e.g. "
                          "[\"head:2@1e-3, all:3@1e-4\", \"head:2@3e-3, all:3@3e-4\"]) instead of optimizer.lr. "
                          "Received: tune key optimizer.lr")
    if ft.stages and (tuner == "hyperband" or max_epochs is not None):
        raise RecipeError("A staged recipe's epochs are its stages' total: change the stages in [tune] instead of "
                          f"--max-epochs or hyperband's budgets. Received: tuner={tuner}, max_epochs={max_epochs}")
    if max_epochs is not None:
        recipe = build_recipe(apply_overrides(recipe.to_dict(), {"epochs": max_epochs}))
    strategy_name = strategy or recipe.strategy
    if strategy_name == "multiworker":
        raise RecipeError("kzoo tune runs each trial on one machine: use --role chief/worker to spread trials "
                          "over machines, and auto/mirrored/tpu within one. Received: strategy=multiworker")

    out = out or os.path.join("runs", f"tune-{recipe.name}")
    tuner_id = tuner_id or (f"worker-{socket.gethostname()}-{os.getpid()}" if role == "worker" else None)
    settings = {"tuner": tuner, "objective": objective}
    host = port = None
    if role is not None:
        host, port = distributed.parse_address(oracle)
    directory = out if role != "worker" else os.path.join(out, f"worker-{tuner_id}")
    if role == "worker":
        distributed.wait_for_chief(host, port, connect_timeout)
    else:
        _check_resumable(out, recipe, settings, overwrite)

    dist = make_strategy(strategy_name) if strategy_name != "default" else None
    previous_policy = keras.mixed_precision.global_policy()
    apply_precision(recipe.mixed_precision, dist or tf.distribute.get_strategy(), recipe)
    try:
        return _search(recipe, tuner, max_trials, objective, out, overwrite, role, tuner_id, export, verbose,
                       poll_seconds, wait_workers, trial_timeout, connect_timeout, on_trial_end, dist, host, port,
                       settings, directory)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _search(recipe, tuner, max_trials, objective, out, overwrite, role, tuner_id, export, verbose, poll_seconds,
            wait_workers, trial_timeout, connect_timeout, on_trial_end, dist, host, port, settings, directory):
    hypermodel = RecipeHyperModel(recipe, strategy=dist)
    direction = _infer_direction(objective)
    kt_objective = keras_tuner.Objective(objective, direction)
    common = dict(objective=kt_objective, seed=recipe.seed + 1, max_retries_per_trial=0,
                  # a failed trial is recorded and the search goes on, however many fail in a row
                  max_consecutive_failed_trials=10**9)
    if tuner == "hyperband":
        kt_oracle = oracle_class("hyperband")(max_epochs=recipe.epochs, factor=3, hyperband_iterations=1, **common)
        total = None
    else:
        kt_oracle = oracle_class(tuner)(max_trials=max_trials, **common)
        total = max_trials

    env = distributed.environment("chief" if role == "chief" else tuner_id, host, port) if role else None
    run_dir = RunDir(directory, resume=True)
    with run_dir:
        if role != "worker":
            if overwrite:
                for name in ("trials.csv", "trials.png", "best.toml", "search.json", "search.toml"):
                    if os.path.exists(run_dir.file(name)):
                        os.remove(run_dir.file(name))
            atomic_write(run_dir.file("search.json"), json.dumps(
                {**settings, "recipe": recipe.to_dict()}, indent=2, sort_keys=True, default=str) + "\n")
            atomic_write(run_dir.file("search.toml"), recipe.to_toml())
        if env is not None:
            env.__enter__()
        try:
            kt = KzooTuner(oracle=kt_oracle, hypermodel=hypermodel, directory=directory, project_name="search",
                           overwrite=overwrite, distribution_strategy=dist, verbose=verbose,
                           chief_options=dict(poll_seconds=poll_seconds, wait_workers=wait_workers,
                                              trial_timeout=trial_timeout,
                                              log=(lambda line: print(line, flush=True)) if verbose else
                                              (lambda line: None)))
            if role == "worker":
                distributed.bound_worker_calls(kt, connect_timeout)
                try:
                    kt.search()
                except Exception as e:  # noqa: BLE001
                    if not distributed.is_chief_gone(e):
                        raise
                    if verbose:
                        print(f"{tuner_id}: the chief at {host}:{port} is gone; the search is over", flush=True)
                return SearchResult(out_dir=directory, objective=objective)
            if verbose:
                where = type(dist or tf.distribute.get_strategy()).__name__
                replicas = (dist or tf.distribute.get_strategy()).num_replicas_in_sync
                print(f"search: {tuner} over {', '.join(recipe.tune)}; {total or 'hyperband'} trials; "
                      f"{objective} ({direction}); {where} with {replicas} replica(s) -> {out}", flush=True)
            progress = Progress(out, total, verbose)
            if on_trial_end is not None:
                progress.callbacks.append(on_trial_end)
            kt.oracle.kzoo_reporter = progress
            kt.oracle.verbose = 0  # kzoo prints its own line per trial
            if verbose and kt.oracle.end_order:
                print(f"resuming: {len(kt.oracle.end_order)} trial(s) already finished in {out}", flush=True)
            kt.search()
            return _finish(kt, hypermodel, out, objective, direction, export, verbose)
        finally:
            if env is not None:
                env.__exit__(None, None, None)


def _finish(kt, hypermodel, out, objective, direction, export, verbose) -> SearchResult:
    rows = trial_rows(kt.oracle)
    write_csv(os.path.join(out, "trials.csv"), rows, ["trial"])
    best_rows = ranked(rows, objective, direction)
    if rows:
        plot_trials(rows, objective, direction, os.path.join(out, "trials.png"),
                    title=f"{hypermodel.recipe.name}: {len(rows)} trials" +
                    (f", best {objective} {best_rows[0][objective]:.4f}" if best_rows else ""))
    result = SearchResult(trials=best_rows + [r for r in rows if r not in best_rows], out_dir=out,
                          objective=objective)
    if best_rows:
        best = best_rows[0]
        trial = kt.oracle.trials[best["trial_id"]]
        result.best = best
        result.best_recipe = best_recipe(hypermodel, trial, objective, best[objective], len(rows))
        text = result.best_recipe.to_toml()
        atomic_write(os.path.join(out, "best.toml"), text)
        if export:
            atomic_write(export, text)
    if verbose:
        failed = sum(r["status"] != "completed" for r in rows)
        print(f"\n{len(rows)} trials ({failed} failed); top {min(5, len(best_rows))} by {objective}:")
        print_ranking(rows, objective, direction)
        print(f"artifacts: {out}/ (trials.csv, trials.png, best.toml)" + (f"; exported {export}" if export else ""))
    return result


