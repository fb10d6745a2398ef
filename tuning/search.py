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
import hashlib
import json
import os
import socket
import statistics
import time
from dataclasses import dataclass, field

import keras
import keras_tuner
import tensorflow as tf
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.oracle import synchronized
from matplotlib.ticker import MaxNLocator

from kzoo.callbacks.mlflow import SearchRun, trial_run
from kzoo.callbacks.registry import preflight
from kzoo.callbacks.tensorboard import write_hparams
from kzoo.errors import RecipeError, RunDirError, UserError, closest
from kzoo.plots import _pyplot, save_figure
from kzoo.recipes.loader import apply_overrides, load
from kzoo.recipes.schema import build_recipe
from kzoo.runs import RunDir, atomic_write, write_csv
from kzoo.tables import print_table
from kzoo.train.distribution import apply_precision, make_strategy
from kzoo.train.metrics import METRICS, metric_names
from kzoo.tuning import distributed
from kzoo.tuning.hypermodel import RecipeHyperModel, TrialFailed

TUNERS = ("random", "bayesian", "hyperband", "grid")
ROLES = ("chief", "worker")
PRUNERS = ("median",)
# A confirmation trial's seed, a hyperparameter so that it reaches a worker with the trial.
CONFIRM_SEED = "kzoo/seed"
# The metric key that marks a pruning report (an epoch's objective) sent through update_trial.
EPOCH_REPORT = "kzoo/epoch_budget"
# Pruning waits for this many completed trials: the median of one trial is that trial, and
# every later trial that starts slower than the first would be stopped.
PRUNE_MIN_TRIALS = 2


@dataclass
class SearchResult:
    """What `search` returns: the finished trials (best first), the best recipe, the directory."""

    trials: list = field(default_factory=list)
    best: dict | None = None
    best_recipe: object = None
    out_dir: str = ""
    objective: str = "val_accuracy"
    confirmed: list = field(default_factory=list)  # the confirmed trials, best mean first
    noise: str | None = None  # "beyond noise" or "within noise": the best's lead over the runner-up
    epochs_saved: int = 0  # epochs the pruned trials did not run


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
        self.kzoo_prune = None  # {"warmup": E}: median pruning after epoch E (see kzoo_epoch_report)
        self.kzoo_confirm = None  # {"k": K, "seeds": S, "seed": the recipe's}: confirmation trials
        self.kzoo_confirm_plan = None  # [[source trial id, seed], ...], fixed when the search part ends

    @synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        self.kzoo_last_contact = time.monotonic()
        searching = any("confirms" not in self.kzoo_extras.get(t.trial_id, {}) for t in self.ongoing_trials.values())
        if trial.status == trial_module.TrialStatus.STOPPED and self.kzoo_confirmations_left() and \
                not searching and not self._retry_queue:
            # the search part is over (its trials all ended): the top trials are final
            trial = self._kzoo_confirmation_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.STOPPED and (self.ongoing_trials or self._retry_queue):
            # Other trials are still out, and one may come back for a retry (its worker may have
            # died): keep this worker asking instead of letting it go.
            self.tuner_ids.add(tuner_id)
            return trial_module.Trial(self.get_space(), trial_id=trial.trial_id,
                                      status=trial_module.TrialStatus.IDLE)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self.kzoo_seen_tuners.add(tuner_id)
            extra = self.kzoo_extras.setdefault(trial.trial_id, {})
            for key in ("curve", "pruned", "budget"):  # a trial run again starts its curve afresh
                extra.pop(key, None)
            extra.update(tuner=tuner_id, started=time.time(), clock=time.monotonic())
        return trial

    # Confirmation: after the search part, the top K trials run again with S further seeds. They
    # are trials of this oracle, so they resume after a kill and go to workers like any other.

    def _kzoo_plan(self) -> list:
        if self.kzoo_confirm_plan is None:
            rows = [r for r in trial_rows(self) if not r.get("confirms")]
            top = ranked(rows, self.objective.name, self.objective.direction)[:self.kzoo_confirm["k"]]
            plan = []
            for row in top:
                own = self.trials[row["trial_id"]].hyperparameters.values.get("seed", self.kzoo_confirm["seed"])
                seeds = [s for s in range(self.kzoo_confirm["seed"] + 1, self.kzoo_confirm["seed"] + 2 +
                                          self.kzoo_confirm["seeds"]) if s != own][:self.kzoo_confirm["seeds"]]
                plan += [[row["trial_id"], seed] for seed in seeds]
            self.kzoo_confirm_plan = plan
        return self.kzoo_confirm_plan

    def _kzoo_handed(self) -> set:
        return {(e["confirms"], e["seed"]) for e in self.kzoo_extras.values() if "confirms" in e}

    def kzoo_confirmations_left(self) -> int:
        """Confirmation trials not handed out yet (0 without `--confirm`, or before it is planned)."""
        if not self.kzoo_confirm:
            return 0
        if self.kzoo_confirm_plan is None:
            return self.kzoo_confirm["k"] * self.kzoo_confirm["seeds"]  # an upper bound until planned
        handed = self._kzoo_handed()
        return sum((src, seed) not in handed for src, seed in self.kzoo_confirm_plan)

    def _kzoo_confirmation_trial(self, tuner_id):
        handed = self._kzoo_handed()
        todo = [(src, seed) for src, seed in self._kzoo_plan() if (src, seed) not in handed]
        if not todo:
            return trial_module.Trial(self.get_space(), status=trial_module.TrialStatus.STOPPED)
        source, seed = todo[0]
        hps = self.trials[source].hyperparameters.copy()
        hps.Fixed(CONFIRM_SEED, seed)
        trial_id = f"{{:0{len(str(self.max_trials))}d}}".format(len(self.trials))
        trial = trial_module.Trial(hps, trial_id=trial_id, status=trial_module.TrialStatus.RUNNING)
        self.tuner_ids.add(tuner_id)
        self.ongoing_trials[tuner_id] = trial
        self.trials[trial_id] = trial
        self.start_order.append(trial_id)
        self.kzoo_extras[trial_id] = {"confirms": source, "seed": seed}
        self._save_trial(trial)
        self.save()
        self._display.on_trial_begin(trial)
        return trial

    # Pruning: each search trial reports its objective after every epoch (through update_trial,
    # so a worker's reports reach the chief); the answer STOPPED ends the trial there.

    @synchronized
    def update_trial(self, trial_id, metrics, step=0):
        if EPOCH_REPORT not in metrics:
            return super().update_trial(trial_id, metrics, step)
        stop = self.kzoo_epoch_report(trial_id, float(metrics[self.objective.name]), int(step),
                                      int(metrics[EPOCH_REPORT]))
        return trial_module.Trial(self.get_space(), trial_id=trial_id, status=trial_module.TrialStatus.STOPPED
                                  if stop else trial_module.TrialStatus.RUNNING)

    @synchronized
    def kzoo_epoch_report(self, trial_id: str, value: float, epoch: int, budget: int) -> bool:
        """Records a trial's objective after `epoch` (1-based); whether the trial is to stop there:
        worse than the median, at the same epoch, of the trials completed before it (pruned,
        failed and confirmation trials left out; at least `PRUNE_MIN_TRIALS` of them), after the
        warm-up epochs and before its last."""
        extra = self.kzoo_extras.setdefault(trial_id, {})
        curve = extra.setdefault("curve", [])
        del curve[epoch - 1:]
        curve += [None] * (epoch - 1 - len(curve)) + [round(value, 6)]
        stop = False
        if self.kzoo_prune and "confirms" not in extra and self.kzoo_prune["warmup"] < epoch < budget:
            earlier = []
            for other in self.end_order:
                e = self.kzoo_extras.get(other, {})
                done = self.trials[other].status == trial_module.TrialStatus.COMPLETED
                if other != trial_id and done and "pruned" not in e and "confirms" not in e and \
                        len(e.get("curve", [])) >= epoch and e["curve"][epoch - 1] is not None:
                    earlier.append(e["curve"][epoch - 1])
            if len(earlier) >= PRUNE_MIN_TRIALS:
                median = statistics.median(earlier)
                stop = value < median if self.objective.direction == "max" else value > median
        if stop:
            extra.update(pruned=epoch, budget=budget)
        self.save()
        return stop

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
        return bool(self.max_trials) and len(self.end_order) >= self.max_trials and not self._retry_queue \
            and not self.kzoo_confirmations_left()

    def get_state(self):
        state = super().get_state()
        extras = {k: {kk: vv for kk, vv in v.items() if kk != "clock"} for k, v in self.kzoo_extras.items()}
        state["kzoo"] = {"extras": extras, "handouts": self.kzoo_handouts, "confirm_plan": self.kzoo_confirm_plan}
        return state

    def set_state(self, state):
        super().set_state(state)
        self.kzoo_last_contact = None
        kzoo = state.get("kzoo", {})
        self.kzoo_extras = kzoo.get("extras", {})
        self.kzoo_handouts = kzoo.get("handouts", {})
        self.kzoo_confirm_plan = kzoo.get("confirm_plan")


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


class EpochReport(keras.callbacks.Callback):
    """Sends a trial's objective after each epoch to the oracle (the chief's, from a worker) and
    stops training when the oracle answers STOPPED (pruned); `pruned` is then the epoch.

    Args:
        oracle: the tuner's oracle, or a worker's `OracleClient`.
        trial_id: the running trial.
        objective: the metric reported.
    """

    def __init__(self, oracle, trial_id: str, objective: str):
        super().__init__()
        self.oracle = oracle
        self.trial_id = trial_id
        self.objective = objective
        self.pruned = 0

    def on_train_begin(self, logs=None):
        self.pruned = 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective)
        if value is None:
            return
        budget = self.params.get("epochs") or epoch + 1
        answer = self.oracle.update_trial(self.trial_id, {EPOCH_REPORT: float(budget), self.objective: float(value)},
                                          step=epoch + 1)
        if answer.status == trial_module.TrialStatus.STOPPED:
            self.pruned = epoch + 1
            self.model.stop_training = True


class KzooTuner(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` whose trials are recipe runs; works with every kzoo oracle."""

    def __init__(self, *args, verbose: int = 1, chief_options=None, **kwargs):
        self.kzoo_verbose = verbose
        self.chief_options = chief_options or {}
        self.kzoo_prune = False  # report each search trial's epochs to the oracle, which may stop it
        self.kzoo_parent_run = None  # the search's MLflow run: trials are its nested runs
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
        extra = []
        if self.kzoo_prune and CONFIRM_SEED not in hp.values:
            extra.append(EpochReport(self.oracle, trial.trial_id, self.oracle.objective.name))
        seed = hp.values.get(CONFIRM_SEED)
        tags = {"mlflow.runName": f"trial {trial.trial_id}", "kzoo.trial_id": trial.trial_id,
                "kzoo.kind": "confirmation" if seed is not None else "trial",
                **({"kzoo.seed": seed} if seed is not None else {})}
        try:
            with trial_run(self.kzoo_parent_run, tags):
                model = self._try_build(hp)
                history = self.hypermodel.fit(hp, model, callbacks=extra)
            if "tensorboard" in self.hypermodel.recipe.callbacks:
                self._write_hparams(trial, history, "pruned" if any(cb.pruned for cb in extra) else "completed")
            return history
        except tf.errors.ResourceExhaustedError as e:
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0][:200]}") from None
        finally:
            del model
            keras.backend.clear_session()
            gc.collect()

    def _write_hparams(self, trial, history, status):
        """One row of TensorBoard's HParams dashboard per trial, in its TensorBoard folder."""
        objective = self.oracle.objective
        scores = [v for v in history.history.get(objective.name, []) if v is not None]
        if not scores:
            return
        values = {k: v for k, v in trial.hyperparameters.values.items()
                  if (not k.startswith("tuner/") or k == "tuner/epochs") and k != CONFIRM_SEED}
        values.update(status=status, seed=int(trial.hyperparameters.values.get(CONFIRM_SEED,
                                                                              self.hypermodel.recipe.seed)))
        best = max(scores) if objective.direction == "max" else min(scores)
        write_hparams(os.path.join(self.hypermodel.trial_dir, "tensorboard"), values,
                      {f"search/{objective.name}": best, "search/epochs": len(scores)}, f"trial {trial.trial_id}")

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
        if key.startswith("tuner/") and key != "tuner/epochs" or key == CONFIRM_SEED:
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
    """One dict per finished trial, in the order they finished.

    With pruning, `epochs` is how many epochs a trial ran and a pruned trial's status is
    `pruned`; a confirmation trial names the trial it repeats (`confirms`, its `trial` number)
    and its `seed`, and a confirmed trial gains `<objective>_mean` and `<objective>_sd` over
    its own score and its confirmations' (sample standard deviation) and `runs`, their number.
    """
    rows = []
    extras = getattr(oracle, "kzoo_extras", {})
    name = oracle.objective.name
    numbers = {trial_id: number for number, trial_id in enumerate(oracle.end_order, 1)}
    for trial_id in oracle.end_order:
        trial = oracle.trials[trial_id]
        extra = extras.get(trial_id, {})
        completed = trial.status == trial_module.TrialStatus.COMPLETED
        status = "pruned" if completed and "pruned" in extra else str(trial.status).lower()
        row = {"trial": numbers[trial_id], "trial_id": trial_id, "status": status,
               name: round(float(trial.score), 6) if completed and trial.score is not None else None,
               "seconds": extra.get("seconds"), "worker": extra.get("tuner", "")}
        if "curve" in extra:
            row["epochs"] = len(extra["curve"])
        if "confirms" in extra:
            row.update(confirms=numbers.get(extra["confirms"]), seed=extra["seed"])
        for key, value in trial.hyperparameters.values.items():
            if (not key.startswith("tuner/") or key == "tuner/epochs") and key != CONFIRM_SEED:
                row[key] = value
        row["reason"] = "" if completed else extra.get("reason") or failure_reason(trial.message)
        rows.append(row)
    for row in rows:
        again = [r[name] for r in rows if r.get("confirms") == row["trial"] and r[name] is not None]
        if again and row[name] is not None:
            scores = [row[name]] + again
            row[f"{name}_mean"] = round(statistics.fmean(scores), 6)
            row[f"{name}_sd"] = round(statistics.stdev(scores), 6) if len(scores) > 1 else 0.0
            row["runs"] = len(scores)
    return rows


def ranked(rows: list[dict], objective: str, direction: str, by: str | None = None) -> list[dict]:
    """The completed search trials (pruned and confirmation trials left out), best first by
    `by` (default: the objective; `<objective>_mean` ranks the confirmed ones)."""
    by = by or objective
    done = [r for r in rows if r["status"] == "completed" and not r.get("confirms") and r.get(by) is not None]
    return sorted(done, key=lambda r: r[by], reverse=direction == "max")


def noise_verdict(rows: list[dict], objective: str, direction: str) -> dict | None:
    """Whether the best confirmed trial (by mean) leads the runner-up by more than the noise,
    taken as the larger of their two standard deviations; `None` with fewer than two confirmed."""
    confirmed = ranked(rows, objective, direction, by=f"{objective}_mean")
    if len(confirmed) < 2:
        return None
    best, second = confirmed[:2]
    lead = abs(best[f"{objective}_mean"] - second[f"{objective}_mean"])
    noise = max(best[f"{objective}_sd"], second[f"{objective}_sd"])
    return {"best": best, "runner_up": second, "lead": lead, "noise": noise,
            "verdict": "beyond noise" if lead > noise else "within noise"}


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
        if row["status"] == "pruned":
            score += f" pruned after epoch {row['epochs']}"
        best_txt = f"best {best[0][name]:.4f} (trial {best[0]['trial']})" if best else "best -"
        values = format_values(trial.hyperparameters.values)
        if row.get("confirms"):
            values = f"confirms trial {row['confirms']} with seed={row['seed']}"
        if self.verbose:
            print(f"trial {len(rows)}/{total}  {values}  {score}  {best_txt}  "
                  f"elapsed {_duration(elapsed)}{eta}", flush=True)
        for callback in self.callbacks:
            callback(row)


def plot_trials(rows: list[dict], objective: str, direction: str, path: str, title: str = ""):
    """Score per trial (failed trials marked), and the best-so-far line."""
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    save_figure(fig, path)


def print_ranking(rows: list[dict], objective: str, direction: str, top: int = 5):
    best = ranked(rows, objective, direction)[:top]
    if not best:
        print("no trial finished with a score")
        return
    skip = ("trial", "trial_id", "status", objective, "seconds", "worker", "reason", "epochs", "confirms", "seed",
            "runs", f"{objective}_mean", f"{objective}_sd")
    keys = []
    for r in best:
        keys += [k for k in r if k not in skip and k not in keys]
    table = []
    for rank, r in enumerate(best, 1):
        values = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else "-" if r.get(k) is None else str(r[k])
                  for k in keys]
        table.append([str(rank), str(r["trial"]), f"{r[objective]:.4f}"] + values)
    print_table(table, ["rank", "trial", objective] + keys)


def confirmed_table(rows: list[dict], objective: str, direction: str) -> tuple[list, list]:
    """`(table, header)`: the confirmed trials by mean, with their runs, mean, sd and search score."""
    confirmed = ranked(rows, objective, direction, by=f"{objective}_mean")
    table = [[str(rank), str(r["trial"]), str(r["runs"]), f"{r[f'{objective}_mean']:.4f}",
              f"{r[f'{objective}_sd']:.4f}", f"{r[objective]:.4f}"] for rank, r in enumerate(confirmed, 1)]
    return table, ["rank", "trial", "runs", f"{objective}_mean", f"{objective}_sd", f"search {objective}"]


def noise_line(verdict: dict | None, objective: str) -> str:
    """The summary's one line on whether the best confirmed trial's lead is beyond the noise."""
    if verdict is None:
        return "fewer than two trials confirmed: nothing to compare"
    best, second = verdict["best"], verdict["runner_up"]
    sign = ">" if verdict["verdict"] == "beyond noise" else "<="
    return (f"trial {best['trial']} leads trial {second['trial']} by {verdict['lead']:.4f} {objective}_mean "
            f"{sign} the larger sd {verdict['noise']:.4f}: {verdict['verdict']}")


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
           connect_timeout: float = 120.0, on_trial_end=None, prune: str | None = None, prune_warmup: int = 1,
           confirm: int = 0, confirm_seeds: int = 3) -> SearchResult:
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
        prune: `"median"`: a trial whose objective after epoch e (e > `prune_warmup`) is worse
            than the median of the trials completed before it, at the same epoch, stops there
            (status `pruned`, never the best). Defaults to `None` (no pruning).
        prune_warmup: epochs before pruning may stop a trial. Defaults to `1`.
        confirm: after the search, train the top `confirm` trials again with `confirm_seeds`
            further seeds each (the recipe's seed + 1, + 2, ...); the best is then the best by
            mean over each trial's runs, and `SearchResult.noise` says whether it leads the
            runner-up by more than the larger standard deviation. Defaults to `0` (none).
        confirm_seeds: further seeds per confirmed trial. Defaults to `3`.

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
    metric = objective[len("val_"):] if objective.startswith("val_") else objective
    if metric in METRICS and metric not in metric_names(recipe):
        raise RecipeError(f"objective {objective} is logged only with {metric} in the recipe's metrics "
                          f"(metrics = [\"{metric}\"]). Received: objective={objective}, metrics={recipe.metrics}")
    if role is not None and role not in ROLES:
        raise UserError(f"--role must be chief or worker. Received: role={role}")
    if prune is not None and prune not in PRUNERS:
        raise RecipeError(f"Unknown pruner '{prune}'. Valid: {', '.join(PRUNERS)}. Received: prune={prune}")
    if prune_warmup is None or prune_warmup < 0:
        raise RecipeError(f"--prune-warmup must be at least 0. Received: prune_warmup={prune_warmup}")
    if confirm is None or confirm < 0 or (confirm and (confirm_seeds is None or confirm_seeds < 1)):
        raise RecipeError("--confirm takes the number of top trials (>= 0) and --confirm-seeds the seeds per "
                          f"trial (>= 1). Received: confirm={confirm}, confirm_seeds={confirm_seeds}")
    if prune and recipe.finetune.stages:
        raise RecipeError("--prune stops a trial after an epoch, and a staged recipe's stages would go on past it: "
                          f"tune its stages without pruning. Received: prune={prune}, finetune.stages="
                          f"{recipe.finetune.stages}")
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

    preflight(recipe)  # an unreachable tracking server fails here, before any trial
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
    options = {"prune": {"warmup": prune_warmup} if prune else None,
               "confirm": {"k": confirm, "seeds": confirm_seeds, "seed": recipe.seed} if confirm else None}
    try:
        return _search(recipe, tuner, max_trials, objective, out, overwrite, role, tuner_id, export, verbose,
                       poll_seconds, wait_workers, trial_timeout, connect_timeout, on_trial_end, dist, host, port,
                       settings, directory, options)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _search(recipe, tuner, max_trials, objective, out, overwrite, role, tuner_id, export, verbose, poll_seconds,
            wait_workers, trial_timeout, connect_timeout, on_trial_end, dist, host, port, settings, directory,
            options):
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
    kt_oracle.kzoo_prune, kt_oracle.kzoo_confirm = options["prune"], options["confirm"]
    if total and options["confirm"]:
        total += options["confirm"]["k"] * options["confirm"]["seeds"]

    env = distributed.environment("chief" if role == "chief" else tuner_id, host, port) if role else None
    run_dir = RunDir(directory, resume=True)
    with run_dir:
        if role != "worker":
            if overwrite:
                for name in ("trials.csv", "trials.png", "best.toml", "search.json", "search.toml", "mlflow.json"):
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
            kt.kzoo_prune = bool(options["prune"])
            tracking = None
            if "mlflow" in recipe.callbacks:
                key = hashlib.sha256(json.dumps([settings, recipe.to_dict(), out], sort_keys=True, default=str)
                                     .encode()).hexdigest()[:16]
                params = {**settings, "max_trials": max_trials, **{k: json.dumps(v) for k, v in options.items()}}
                tracking = SearchRun(out, recipe, key, params, create=role != "worker")
                kt.kzoo_parent_run = tracking.run_id
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
            result = _finish(kt, hypermodel, out, objective, direction, export, verbose)
            if tracking is not None:
                best = result.best or {}
                figures = {f"best_{objective}": best.get(objective), f"best_{objective}_mean":
                           best.get(f"{objective}_mean"), "epochs_saved": result.epochs_saved,
                           "trials": len(result.trials)}
                tracking.finish(out, {k: v for k, v in figures.items() if v is not None},
                                {"kzoo.best_trial": best.get("trial_id", ""), "kzoo.noise": result.noise or ""})
            return result
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
    extras = kt.oracle.kzoo_extras
    result.epochs_saved = sum(extras[r["trial_id"]]["budget"] - r["epochs"] for r in rows if r["status"] == "pruned")
    result.confirmed = ranked(rows, objective, direction, by=f"{objective}_mean")
    verdict = noise_verdict(rows, objective, direction)
    result.noise = verdict["verdict"] if verdict else None
    if best_rows:
        best = result.confirmed[0] if result.confirmed else best_rows[0]
        trial = kt.oracle.trials[best["trial_id"]]
        result.best = best
        searched = sum(not r.get("confirms") for r in rows)
        result.best_recipe = best_recipe(hypermodel, trial, objective, best[objective], searched)
        if result.confirmed:
            result.best_recipe = dataclasses.replace(result.best_recipe, description=(
                f"Best by mean of {len(result.confirmed)} confirmed of {searched} trials of `kzoo tune "
                f"{hypermodel.recipe.name}`: {objective}_mean={best[f'{objective}_mean']:.4f} "
                f"(sd {best[f'{objective}_sd']:.4f}, {best['runs']} seeds)"))
        text = result.best_recipe.to_toml()
        atomic_write(os.path.join(out, "best.toml"), text)
        if export:
            atomic_write(export, text)
    if verbose:
        searched = [r for r in rows if not r.get("confirms")]
        failed = sum(r["status"] not in ("completed", "pruned") for r in searched)
        pruned = sum(r["status"] == "pruned" for r in searched)
        saved = f", {pruned} pruned ({result.epochs_saved} epochs saved)" if kt.oracle.kzoo_prune else ""
        print(f"\n{len(searched)} trials ({failed} failed{saved}); top {min(5, len(best_rows))} by {objective}:")
        print_ranking(rows, objective, direction)
        if result.confirmed:
            table, header = confirmed_table(rows, objective, direction)
            print(f"\nconfirmed: top {len(table)} trials, each with {kt.oracle.kzoo_confirm['seeds']} further seeds, "
                  f"by {objective}_mean:")
            print_table(table, header)
            print(noise_line(verdict, objective))
        print(f"artifacts: {out}/ (trials.csv, trials.png, best.toml)" + (f"; exported {export}" if export else ""))
    return result


