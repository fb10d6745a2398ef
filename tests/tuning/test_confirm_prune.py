"""kzoo tune --confirm (top trials trained again with other seeds) and --prune median."""

import csv
import glob
import json
import os
import signal
import time

import keras_tuner
import pytest
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorflow.python.summary.summary_iterator import summary_iterator

from kzoo.errors import RecipeError
from kzoo.recipes import load
from kzoo.tuning.search import CONFIRM_SEED, EPOCH_REPORT, oracle_class, search, trial_rows

from .conftest import kzoo_process


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def make_oracle(tmp_path, max_trials=4, prune=None, confirm=None):
    oracle = oracle_class("random")(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=max_trials,
                                    seed=1, max_consecutive_failed_trials=10**9)
    oracle._set_project_dir(str(tmp_path), "search")
    hp = keras_tuner.HyperParameters()
    hp.Float("optimizer.lr", 1e-3, 1e-1, sampling="log")
    oracle.update_space(hp)
    oracle.kzoo_prune, oracle.kzoo_confirm = prune, confirm
    return oracle


def run_trial(oracle, curve, tuner="t"):
    """Hands out a trial and reports `curve` (one objective per epoch) as a trial would; returns
    (trial, epochs run before the oracle said stop)."""
    trial = oracle.create_trial(tuner)
    ran = 0
    for epoch, value in enumerate(curve, 1):
        ran = epoch
        answer = oracle.update_trial(trial.trial_id, {EPOCH_REPORT: len(curve), "val_accuracy": value}, step=epoch)
        if answer.status == "STOPPED":
            break
    oracle.update_trial(trial.trial_id, {"val_accuracy": max(curve[:ran])})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    return trial, ran


def test_median_pruning_stops_a_trial_worse_than_the_earlier_median_after_the_warmup(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=5, prune={"warmup": 1})
    assert run_trial(oracle, [0.5, 0.6, 0.7, 0.8])[1] == 4
    assert run_trial(oracle, [0.1, 0.2, 0.3, 0.4])[1] == 4  # one earlier trial is no median yet
    assert run_trial(oracle, [0.1, 0.9, 0.9, 0.9])[1] == 4  # epoch 1 is the warm-up
    trial, ran = run_trial(oracle, [0.3, 0.3, 0.3, 0.3])  # below the median 0.6 after epoch 2
    assert ran == 2
    assert run_trial(oracle, [0.5, 0.61, 0.8, 0.2])[1] == 4  # the last epoch never prunes (saves nothing)
    rows = {r["trial_id"]: r for r in trial_rows(oracle)}
    assert rows[trial.trial_id]["status"] == "pruned" and rows[trial.trial_id]["epochs"] == 2
    assert [r["status"] for r in rows.values()].count("pruned") == 1


def test_confirmation_trials_repeat_the_top_trials_with_other_seeds_and_rank_by_mean(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=3, confirm={"k": 2, "seeds": 2, "seed": 0})
    for score in (0.5, 0.9, 0.8):
        run_trial(oracle, [score])
    confirmations = {}
    for score in (0.85, 0.86, 0.84, 0.83):
        trial = oracle.create_trial("t")
        confirmations[trial.trial_id] = trial.hyperparameters.values[CONFIRM_SEED]
        oracle.update_trial(trial.trial_id, {"val_accuracy": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert oracle.create_trial("t").status == "STOPPED" and oracle.kzoo_search_over()
    assert sorted(confirmations.values()) == [1, 1, 2, 2]  # the recipe's seed + 1, + 2
    rows = trial_rows(oracle)
    by_number = {r["trial"]: r for r in rows}
    assert by_number[2]["val_accuracy_mean"] == pytest.approx((0.9 + 0.85 + 0.86) / 3, abs=1e-6)
    assert by_number[3]["runs"] == 3 and by_number[1].get("runs") is None
    assert {r["confirms"] for r in rows if r.get("confirms")} == {2, 3}


def test_confirmations_wait_for_the_last_search_trial_then_go_to_every_worker(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=2, confirm={"k": 1, "seeds": 2, "seed": 0})
    run_trial(oracle, [0.7], tuner="w1")
    last = oracle.create_trial("w1")
    assert oracle.create_trial("w2").status == "IDLE"  # the top trials are not final yet
    oracle.update_trial(last.trial_id, {"val_accuracy": 0.9})
    last.status = "COMPLETED"
    oracle.end_trial(last)
    first, second = oracle.create_trial("w1"), oracle.create_trial("w2")  # both run at once
    assert {first.status, second.status} == {"RUNNING"} and first.trial_id != second.trial_id
    assert {first.hyperparameters.values[CONFIRM_SEED], second.hyperparameters.values[CONFIRM_SEED]} == {1, 2}
    assert oracle.kzoo_confirm_plan == [[last.trial_id, 1], [last.trial_id, 2]]
    assert oracle.create_trial("w3").status == "IDLE"  # nothing left to hand out, two still out
    assert oracle.kzoo_search_over() and len(oracle.ongoing_trials) == 2  # the chief waits for them


TUNE = '''
"optimizer.lr" = { type = "float", min = 1e-4, max = 3e-2, sampling = "log" }
"model.width" = [4, 8, 16]
'''


@pytest.mark.slow  # a whole pruned and confirmed search (80 s on 2 cores); .ci/run runs it
def test_pruned_and_confirmed_search_writes_mean_sd_and_a_noise_verdict(tiny_recipe, tmp_path, cli):
    path = tiny_recipe(tune=TUNE, extra="[callbacks.tensorboard]\nwrite_graph = false\n")
    out = tmp_path / "s"
    # 2 epochs and no warm-up: a trial can be pruned after its first epoch, once 2 trials completed
    flags = ("--max-trials", 4, "--max-epochs", 2, "--prune", "median", "--prune-warmup", 0,
             "--confirm", 2, "--confirm-seeds", 1)
    code, stdout, err = cli("tune", path, *flags, "--out", out)
    assert code == 0, err
    rows = read_rows(out / "trials.csv")
    search_rows = [r for r in rows if not r["confirms"]]
    assert len(search_rows) == 4 and len(rows) == 6
    pruned = [r for r in search_rows if r["status"] == "pruned"]
    assert pruned and all(int(r["epochs"]) == 1 for r in pruned)
    confirmed = [r for r in rows if r["val_accuracy_mean"]]
    assert len(confirmed) == 2 and all(r["status"] == "completed" and r["runs"] == "2" for r in confirmed)
    assert {r["seed"] for r in rows if r["confirms"]} == {"1"}
    best = max(confirmed, key=lambda r: float(r["val_accuracy_mean"]))
    assert load(str(out / "best.toml")).model["width"] == int(best["model.width"])
    assert f"{len(pruned)} pruned (" in stdout and "epochs saved" in stdout
    assert "within noise" in stdout or "beyond noise" in stdout

    # TensorBoard's HParams dashboard: one row (session) per trial, under the search folder
    sessions = {}
    for event_file in glob.glob(str(out / "search" / "trial_*" / "tensorboard" / "events.out.tfevents.*")):
        for event in summary_iterator(event_file):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        info = data.session_start_info
                        sessions[info.group_name] = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                                     for k, v in info.hparams.items()}
    assert len(sessions) == len(rows)
    assert all("optimizer.lr" in s and s["status"] in ("completed", "pruned") for s in sessions.values())

    # run again: nothing is trained again
    finished_now = []
    search(path, max_trials=4, max_epochs=2, prune="median", prune_warmup=0, confirm=2, confirm_seeds=1,
           out=str(out), verbose=0, on_trial_end=finished_now.append)
    assert finished_now == []


def test_bad_prune_and_confirm_flags_are_refused(tiny_recipe, tmp_path):
    with pytest.raises(RecipeError, match="confirm=-1"):
        search(tiny_recipe(), confirm=-1, out=str(tmp_path / "x"))
    with pytest.raises(RecipeError, match="prune=mean"):
        search(tiny_recipe(), prune="mean", out=str(tmp_path / "x"))


@pytest.mark.slow  # the command on the shipped recipe: 6 trials of up to 4 epochs and 6 confirmations
def test_acceptance_command_prunes_confirms_and_gives_a_noise_verdict(tmp_path, cli):
    out = tmp_path / "acc"
    code, stdout, err = cli("tune", "mlp-digits", "--max-trials", 6, "--max-epochs", 4, "--prune", "median",
                            "--confirm", 2, "--confirm-seeds", 3, "--out", out)
    assert code == 0, err
    rows = read_rows(out / "trials.csv")
    assert any(r["status"] == "pruned" for r in rows)
    confirmed = [r for r in rows if r["val_accuracy_mean"]]
    assert len(confirmed) == 2 and all(r["val_accuracy_sd"] and r["runs"] == "4" for r in confirmed)
    assert "within noise" in stdout or "beyond noise" in stdout


@pytest.mark.slow  # a process killed during confirmation, then the search resumed
def test_search_killed_during_confirmation_resumes_without_retraining_finished_confirmations(tiny_recipe,
                                                                                             tmp_path):
    path = tiny_recipe(tune=TUNE, epochs=3)
    out = tmp_path / "k"
    args = ("--max-trials", 3, "--confirm", 2, "--confirm-seeds", 2)
    proc = kzoo_process("tune", path, *args, "--out", out)
    try:
        second = out / "search" / "trial_4" / "trial.json"  # the second confirmation trial
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not second.exists():
            time.sleep(0.2)
        assert second.exists(), "the second confirmation never started"
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    before = read_rows(out / "trials.csv")
    assert len(before) == 4 and before[-1]["confirms"], "the kill should land in the second confirmation"
    assert json.loads(second.read_text())["status"] == "RUNNING"

    finished_now = []
    result = search(path, max_trials=3, confirm=2, confirm_seeds=2, out=str(out), verbose=0,
                    on_trial_end=finished_now.append)
    assert sorted(r["trial_id"] for r in finished_now) == ["4", "5", "6"]  # trial 3 (confirmation 1) kept
    rows = read_rows(out / "trials.csv")
    moving = ("val_accuracy_mean", "val_accuracy_sd", "runs")  # a confirmed trial's mean grows with its runs
    assert [{k: v for k, v in r.items() if k not in moving} for r in rows[:4]] == \
        [{k: v for k, v in r.items() if k not in moving} for r in before] and len(rows) == 7
    assert len(result.confirmed) == 2 and all(r["runs"] == 3 for r in result.confirmed)
