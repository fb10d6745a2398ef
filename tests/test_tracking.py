"""MLflow tracking ([callbacks.mlflow], the `tracking` extra).

The MLflow tests read what kzoo wrote back with `mlflow.tracking.MlflowClient` from a real
store: SQLite, and in one test an `mlflow server` process on 127.0.0.1. Without mlflow they
skip; CI installs the extra (`make tracking`) and sets KZOO_REQUIRE_TRACKING=1, so there they
fail instead of skipping.
"""

import csv
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from kzoo.errors import RunDirError
from kzoo.runs import RunDir

from .tuning.conftest import free_ports

RECIPE = """
name = "tracked"
seed = 0
epochs = {epochs}
[data]
dataset = "digits"
batch_size = 64
[model]
name = "mlp"
depth = 1
width = 16
[optimizer]
name = "adam"
lr = 0.003
[callbacks.update_ratio]
every_n_steps = 5
[callbacks.mlflow]
{mlflow}
{extra}
[tune]
"optimizer.lr" = {{ type = "float", min = 1e-4, max = 3e-2, sampling = "log" }}
"model.width" = [4, 8, 16]
"""


def _mlflow():
    if os.environ.get("KZOO_REQUIRE_TRACKING"):
        import mlflow

        return mlflow
    return pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds)."""
    _mlflow()
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def tracked(tmp_path, monkeypatch, store):
    """Writes a tracked recipe; MLFLOW_TRACKING_URI is the module's store, artifacts go to tmp_path."""
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)

    def write(epochs=2, mlflow="", extra="", name="tracked.toml"):
        path = tmp_path / name
        path.write_text(RECIPE.format(epochs=epochs, mlflow=mlflow, extra=extra))
        return str(path)

    return write


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(mc, experiment):
    exp = mc.get_experiment_by_name(experiment)
    return mc.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.slow  # two runs into a SQLite store (30 s on 2 cores); .ci/run runs it
def test_run_logs_params_epoch_metrics_and_artifacts_and_a_resumed_run_continues(tracked, store, tmp_path, cli,
                                                                                 monkeypatch):
    path = tracked(epochs=2, mlflow='experiment = "run-test"\nlog_model = true')
    out = tmp_path / "run"
    real_write = RunDir.write_text

    def full_disk(self, name, text):  # the run stops at its end and resumes from its checkpoint
        if name == "metrics.json":
            raise RunDirError("Could not write metrics.json (No space left on device)")
        return real_write(self, name, text)

    monkeypatch.setattr(RunDir, "write_text", full_disk)
    code, _, err = cli("run", path, "--out", out, "--quiet")
    assert code == 2 and "No space left" in err
    monkeypatch.setattr(RunDir, "write_text", real_write)
    code, _, err = cli("run", path, "--out", out, "--quiet")
    assert code == 0, err

    mc = client(store)
    (run,) = runs_of(mc, "run-test")  # the resumed run continued its MLflow run
    assert run.info.status == "FINISHED" and run.data.tags["kzoo.status"] == "completed"
    assert run.data.params["optimizer.lr"] == "0.003" and run.data.params["model.width"] == "16"
    history = mc.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    assert len(mc.get_metric_history(run.info.run_id, "update_ratio/median")) == 2  # a monitor's figure
    assert run.data.metrics["test_accuracy"] > 0.3
    names = {a.path for a in mc.list_artifacts(run.info.run_id)}
    assert {"recipe.toml", "history.csv", "metrics.json", "curves.png", "report.html", "model.keras"} <= names


@pytest.mark.slow  # a search of 5 trials: CI runs it (`pytest -m slow tests/test_tracking.py`)
def test_tune_logs_a_parent_run_with_nested_trials_confirmations_and_pruned_ones(tracked, store, tmp_path, cli):
    path = tracked(epochs=2, mlflow='experiment = "tune-test"')
    out = tmp_path / "tune"
    code, _, err = cli("tune", path, "--max-trials", 4, "--prune", "median", "--prune-warmup", 0,
                       "--confirm", 1, "--confirm-seeds", 1, "--out", out, "--quiet")
    assert code == 0, err
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    mc = client(store)
    runs = runs_of(mc, "tune-test")
    (parent,) = [r for r in runs if r.data.tags.get("kzoo.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(rows) == 5 and parent.info.status == "FINISHED"
    statuses = {r.data.tags["kzoo.trial_id"]: r.data.tags["kzoo.status"] for r in children}
    assert statuses == {r["trial_id"]: r["status"] for r in rows}
    assert "pruned" in statuses.values()
    (confirmation,) = [r for r in children if r.data.tags["kzoo.kind"] == "confirmation"]
    assert confirmation.data.tags["kzoo.seed"] == "1" and confirmation.data.params["seed"] == "1"
    assert {"trials.csv", "best.toml"} <= {a.path for a in mc.list_artifacts(parent.info.run_id)}
    assert "best_val_accuracy" in parent.data.metrics



def test_an_unreachable_or_malformed_tracking_uri_is_one_line_before_training(tracked, tmp_path, cli):
    (port,) = free_ports(1)
    for uri, says in ((f"http://127.0.0.1:{port}", "No MLflow tracking server answered"),
                      ("htp:/nowhere", "not a tracking URI")):
        path = tracked(mlflow=f'tracking_uri = "{uri}"')
        for args in (("run", path, "--out", tmp_path / "r"), ("tune", path, "--max-trials", 1, "--out", tmp_path / "t")):
            code, out, err = cli(*args)
            assert code == 2 and says in err and err.strip().count("\n") == 0, err
            assert "Epoch" not in out
    assert not (tmp_path / "r" / "history.csv").exists()


@pytest.mark.slow  # `mlflow server` takes 10-100 s to start on 2 loaded cores; CI runs it
def test_runs_log_into_a_real_mlflow_server(tracked, tmp_path, cli):
    (port,) = free_ports(1)
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        path = tracked(epochs=1, mlflow=f'tracking_uri = "{uri}"\nexperiment = "served"')
        code, _, err = cli("run", path, "--out", tmp_path / "served", "--quiet")
        assert code == 0, err
        mc = client(uri)
        (run,) = runs_of(mc, "served")
        assert run.info.status == "FINISHED" and run.data.params["data.dataset"] == "digits"
        assert len(mc.get_metric_history(run.info.run_id, "loss")) == 1
        assert {"metrics.json", "history.csv"} <= {a.path for a in mc.list_artifacts(run.info.run_id)}
    finally:
        server.kill()
        server.wait(timeout=30)
