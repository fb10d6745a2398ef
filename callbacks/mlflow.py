"""MLflow tracking of kzoo runs and searches (the optional `tracking` extra: the `mlflow` package).

`[callbacks.mlflow]` logs a run as one MLflow run: the flattened recipe as params, every epoch's
metrics (whatever the other callbacks put in the logs, the monitors' figures included: this
callback runs last), and, when the run is finished, its artifacts (`recipe.toml`,
`history.csv`, `metrics.json`, the plots, `report.html`; `model.keras` with `log_model`) and
the test metrics. The run's id is kept in the run folder (`mlflow.json`), so a killed run that
is resumed continues its MLflow run, and every stage of a staged run logs into the same one.

`kzoo tune` logs the search as a parent run and each trial as a nested child run
(`mlflow.parentRunId`), tagged with its status (`kzoo.status`: completed, pruned, failed) and,
for a confirmation trial, the trial it repeats and its seed. A trial interrupted and run again
replaces its child run. A worker of a distributed search finds the parent by its
`kzoo.search_key` tag.

The tracking URI is checked before any training (`check_tracking`): a malformed URI, an http
server that does not answer, or a store that cannot be opened is a one-line `TrackingError`.

`mlflow` is imported inside the functions that use it: it is an optional dependency, and
importing it costs seconds that a run without `[callbacks.mlflow]` should not pay.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import keras

from kzoo.errors import UserError
from kzoo.runs import atomic_write

RUN_FILE = "mlflow.json"
DEFAULT_URI = "./mlruns"
SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
_CHECKED: set = set()
_TRIAL: dict | None = None  # set by `kzoo tune` around each trial (see `trial_run`)


class TrackingError(UserError):
    """An MLflow tracking URI that is malformed or unreachable, or mlflow not installed."""


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise TrackingError("[callbacks.mlflow] needs the `tracking` extra: pip install 'kzoo[tracking]' "
                            "(or `make tracking`). Received: import mlflow failed") from None
    return mlflow


def resolve_uri(tracking_uri: str = "") -> str:
    """The recipe's `tracking_uri`, else `MLFLOW_TRACKING_URI`, else `./mlruns`."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_tracking(tracking_uri: str = "", timeout: float = 5.0) -> str:
    """Checks that a tracking URI is well formed and its store answers; returns the resolved URI.

    Checked once per process and URI. An http(s) server must answer `GET /health` within
    `timeout` seconds (MLflow's own client would retry for minutes).

    Args:
        tracking_uri: the URI; empty: `MLFLOW_TRACKING_URI`, else `./mlruns`. Defaults to `""`.
        timeout: seconds to wait for an http(s) server. Defaults to `5.0`.

    Raises:
        TrackingError: a malformed or unreachable URI, or mlflow missing.
    """
    uri = resolve_uri(tracking_uri)
    if uri in _CHECKED:
        return uri
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter: a path
        scheme = ""
    bad = scheme not in SCHEMES or (scheme in ("http", "https") and not parsed.hostname) or \
        (scheme == "sqlite" and not uri.startswith("sqlite:///"))
    if bad:
        raise TrackingError(f"callbacks.mlflow.tracking_uri is not a tracking URI MLflow reads (a path, file:, "
                            f"sqlite:///PATH, http(s)://HOST:PORT, a database URL). Received: tracking_uri={uri!r}")
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                pass
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                raise TrackingError(f"The MLflow server at {uri} answered {e.code}. Received: tracking_uri={uri!r}") \
                    from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(f"No MLflow tracking server answered at {uri} within {timeout:g} s ({reason}). "
                                f"Start it, or set another tracking_uri. Received: tracking_uri={uri!r}") from None
    _mlflow()
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 (any store error: a path that cannot be written, a bad database)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TrackingError(f"The MLflow tracking store at {uri} cannot be opened ({first}). "
                            f"Received: tracking_uri={uri!r}") from None
    _CHECKED.add(uri)
    return uri


def client(uri: str):
    """An `MlflowClient` on `uri` (tracking and registry)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment `name`, created if missing (a deleted one is restored)."""
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        try:
            return mlflow_client.create_experiment(name)
        except Exception:  # noqa: BLE001 (another process created it meanwhile)
            exp = mlflow_client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def flatten(d: dict, prefix: str = "") -> dict:
    """`{"optimizer": {"lr": 0.003}}` -> `{"optimizer.lr": "0.003"}`: MLflow params (strings)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif value is not None and value != {}:
            out[name] = (json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value))[:6000]
    return out


def recipe_params(recipe) -> dict:
    """The recipe as MLflow params, its search space left out (a trial logs its values)."""
    raw = {k: v for k, v in recipe.to_dict().items() if k not in ("tune", "description")}
    return flatten(raw)


def _metric_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", str(key))


def log_params(mlflow_client, run_id: str, params: dict):
    from mlflow.entities import Param

    items = [Param(_metric_name(k), v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's batch limit for params
        mlflow_client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(mlflow_client, run_id: str, values: dict, step: int):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = []
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        items.append(Metric(_metric_name(key), value if math.isfinite(value) else float("nan"), now, step))
    for i in range(0, len(items), 1000):
        mlflow_client.log_batch(run_id, metrics=items[i:i + 1000])


def _read_run_file(folder: str) -> dict:
    path = os.path.join(folder, RUN_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_run_file(folder: str, info: dict):
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, RUN_FILE), json.dumps(info, indent=2) + "\n")


def _alive(mlflow_client, run_id: str) -> bool:
    try:
        return mlflow_client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # noqa: BLE001 (removed from the store, or another store)
        return False


@contextlib.contextmanager
def trial_run(parent_run_id: str | None, tags: dict):
    """Makes the MLflow callbacks built inside (a tuner trial's) nested child runs of
    `parent_run_id`, tagged with `tags`; an earlier child run in the trial folder is replaced."""
    global _TRIAL
    saved, _TRIAL = _TRIAL, {"parent": parent_run_id, "tags": dict(tags)}
    try:
        yield _TRIAL
    finally:
        _TRIAL = saved


class MlflowLogger(keras.callbacks.Callback):
    """Logs a kzoo run into MLflow: params, every epoch's metrics, then its artifacts.

    Args:
        out_dir: the run (or trial) folder; the MLflow run's id is kept there in `mlflow.json`.
        recipe: the run's `Recipe` (its flattened fields are the params, its name the run's).
        tracking_uri: where to log; empty: `MLFLOW_TRACKING_URI`, else `./mlruns`. Defaults to `""`.
        experiment: the MLflow experiment. Defaults to the recipe's name.
        log_model: also log `model.keras` as an artifact. Defaults to `False`.

    Example:
        >>> # [callbacks.mlflow] in a recipe; then: mlflow ui --backend-store-uri sqlite:///mlflow.db
    """

    runs_last = True  # reads what the other callbacks write into the epoch logs

    def __init__(self, out_dir: str, recipe, tracking_uri: str = "", experiment: str = "", log_model: bool = False):
        super().__init__()
        self.out_dir = out_dir
        self.recipe = recipe
        self.tracking_uri = tracking_uri
        self.experiment = experiment or recipe.name
        self.log_model = bool(log_model)
        self.trial = dict(_TRIAL) if _TRIAL is not None else None
        self.run_id = None
        self.rows = []
        self._client = None

    def _start(self):
        uri = check_tracking(self.tracking_uri)
        self._client = mc = client(uri)
        info = _read_run_file(self.out_dir)
        if info.get("run_id") and info.get("tracking_uri") == uri and _alive(mc, info["run_id"]):
            if self.trial is None:  # a resumed run, or the next stage: go on logging into it
                self.run_id = info["run_id"]
                mc.update_run(self.run_id, status="RUNNING")
                return
            mc.delete_run(info["run_id"])  # a trial run again from scratch replaces its child run
        tags = {"kzoo.recipe": self.recipe.name, "kzoo.run_dir": os.path.abspath(self.out_dir)}
        name = os.path.basename(os.path.normpath(self.out_dir))
        if self.trial is not None:
            tags.update({k: str(v) for k, v in self.trial["tags"].items()})
            if self.trial["parent"]:
                tags["mlflow.parentRunId"] = self.trial["parent"]
            name = self.trial["tags"].get("mlflow.runName", name)
        run = mc.create_run(experiment_id(mc, self.experiment), run_name=name, tags=tags)
        self.run_id = run.info.run_id
        log_params(mc, self.run_id, recipe_params(self.recipe))
        mc.log_text(self.run_id, self.recipe.to_toml(), "recipe.toml")
        _write_run_file(self.out_dir, {"run_id": self.run_id, "tracking_uri": uri,
                                       "experiment_id": run.info.experiment_id})

    def on_train_begin(self, logs=None):
        self.rows = []
        if self.run_id is None:
            self._start()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.rows.append({"epoch": epoch + 1, **logs})
        log_metrics(self._client, self.run_id, logs, step=epoch + 1)

    def on_run_end(self, status: str, run_dir: str | None = None, metrics: dict | None = None):
        """Ends the MLflow run: `status` is `completed`, `pruned` or `failed`; a finished run's
        folder `run_dir` gives the artifacts, and `metrics` (metrics.json's) the final figures."""
        if self.run_id is None:
            return
        mc = self._client
        mc.set_tag(self.run_id, "kzoo.status", status)
        if metrics:
            log_metrics(mc, self.run_id, {k: v for k, v in metrics.items() if k != "seed"}, step=0)
        if run_dir is not None:
            names = ["recipe.toml", "history.csv", "metrics.json", "report.html"] + sorted(
                f for f in os.listdir(run_dir) if f.endswith(".png"))
            if self.log_model:
                names.append("model.keras")
            for name in names:
                if os.path.exists(os.path.join(run_dir, name)):
                    mc.log_artifact(self.run_id, os.path.join(run_dir, name))
        elif self.rows:  # a trial keeps no history.csv in its folder: log what it trained
            keys = list(dict.fromkeys(k for row in self.rows for k in row))
            lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in self.rows]
            mc.log_text(self.run_id, "\n".join(lines) + "\n", "history.csv")
        mc.set_terminated(self.run_id, "FAILED" if status == "failed" else "FINISHED")


# ---------------------------------------------------------------------------------------------
# The parent run of a search.


class SearchRun:
    """The MLflow parent run of a `kzoo tune` search (the chief's, or one in this process).

    Args:
        out: the search folder (`mlflow.json` keeps the run's id there: a resumed search goes on
            in the same run).
        recipe: the searched `Recipe`; its `[callbacks.mlflow]` says where to log.
        key: what names this search for its workers (`kzoo.search_key` tag).
        params: the search's settings, logged as params with the recipe's.
        create: `False` on a worker: find the chief's run instead of starting one. Defaults to `True`.
    """

    def __init__(self, out: str, recipe, key: str, params: dict, create: bool = True):
        spec = recipe.callbacks["mlflow"]
        uri = check_tracking(spec.get("tracking_uri", ""))
        self.client = mc = client(uri)
        self.run_id = None
        exp = experiment_id(mc, spec.get("experiment") or recipe.name)
        if not create:
            found = mc.search_runs([exp], filter_string=f"tags.`kzoo.search_key` = '{key}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
            self.run_id = found[0].info.run_id if found else None
            return
        info = _read_run_file(out)
        if info.get("run_id") and info.get("tracking_uri") == uri and _alive(mc, info["run_id"]):
            self.run_id = info["run_id"]
            mc.update_run(self.run_id, status="RUNNING")
            return
        run = mc.create_run(exp, run_name=f"tune {recipe.name}",
                            tags={"kzoo.search_key": key, "kzoo.recipe": recipe.name, "kzoo.kind": "search",
                                  "kzoo.run_dir": os.path.abspath(out)})
        self.run_id = run.info.run_id
        log_params(mc, self.run_id, {**recipe_params(recipe), **{f"search.{k}": str(v) for k, v in params.items()}})
        _write_run_file(out, {"run_id": self.run_id, "tracking_uri": uri, "experiment_id": exp})

    def finish(self, out: str, metrics: dict, tags: dict):
        """Logs the search's artifacts (trials.csv, trials.png, best.toml, search.toml), its
        best figures and its verdict, and ends the run."""
        for name in ("trials.csv", "trials.png", "best.toml", "search.toml"):
            if os.path.exists(os.path.join(out, name)):
                self.client.log_artifact(self.run_id, os.path.join(out, name))
        log_metrics(self.client, self.run_id, metrics, step=0)
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))
        self.client.set_terminated(self.run_id, "FINISHED")
