"""Distributed tuning: a chief and two workers on 127.0.0.1, and stale trials on the chief."""

import csv
import re

import keras_tuner
import pytest

from kzoo.tuning.distributed import DistributedError, parse_address
from kzoo.tuning.search import oracle_class

from .conftest import free_ports, kzoo_process


def make_oracle(tmp_path, max_trials=4):
    oracle = oracle_class("random")(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=max_trials,
                                    seed=1, max_consecutive_failed_trials=10**9)
    oracle._set_project_dir(str(tmp_path), "search")
    hp = keras_tuner.HyperParameters()
    hp.Float("optimizer.lr", 1e-3, 1e-1, sampling="log")
    oracle.update_space(hp)
    return oracle


def finish(oracle, trial, score):
    oracle.update_trial(trial.trial_id, {"val_accuracy": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_a_trial_of_a_vanished_worker_is_handed_out_again_then_failed(tmp_path):
    oracle = make_oracle(tmp_path)
    lost = oracle.create_trial("w1")
    assert oracle.expire_stale(3600) == []  # not stale yet
    lines = oracle.expire_stale(0)
    assert "handing it out again" in lines[0] and "w1" not in oracle.tuner_ids
    again = oracle.create_trial("w2")
    assert again.trial_id == lost.trial_id
    finish(oracle, again, 0.9)
    finish(oracle, lost, 0.1)  # the presumed-dead worker reports late: ignored
    assert oracle.end_order == [lost.trial_id]
    assert oracle.trials[lost.trial_id].score == pytest.approx(0.9)

    slow = oracle.create_trial("w5")
    oracle.expire_stale(0)
    rerun = oracle.create_trial("w6")
    finish(oracle, slow, 0.3)  # the first worker was only slow: its result counts
    finish(oracle, rerun, 0.4)  # the second report is dropped, and w6 is free again
    assert oracle.end_order.count(slow.trial_id) == 1 and "w6" not in oracle.ongoing_trials
    assert oracle.trials[slow.trial_id].score == pytest.approx(0.3)

    stuck = oracle.create_trial("w3")
    oracle.expire_stale(0)
    assert oracle.create_trial("w4").trial_id == stuck.trial_id
    assert "failed" in oracle.expire_stale(0)[0]  # the second time it is failed, not handed out
    assert oracle.trials[stuck.trial_id].status == "FAILED" and not oracle.ongoing_trials


def test_oracle_address_is_checked():
    assert parse_address("10.0.0.5:8000") == ("10.0.0.5", 8000)
    with pytest.raises(DistributedError, match="oracle='10.0.0.5'"):
        parse_address("10.0.0.5")


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_chief_and_two_workers_split_the_trials_and_all_exit(tiny_recipe, tmp_path):
    path = tiny_recipe(epochs=1)
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    out = tmp_path / "d"
    common = ("tune", path, "--max-trials", 4, "--out", out, "--oracle", address)
    chief = kzoo_process(*common, "--role", "chief", "--poll-seconds", 0.5, "--wait-workers", 60)
    workers = [kzoo_process(*common, "--role", "worker", "--tuner-id", f"w{i}", "--connect-timeout", 60)
               for i in (1, 2)]
    outputs = {}
    try:
        for name, proc in [("w1", workers[0]), ("w2", workers[1]), ("chief", chief)]:
            outputs[name] = proc.communicate(timeout=150)[0]  # every process exits by itself
            assert proc.returncode == 0, outputs[name][-2000:]
    finally:
        for proc in [chief, *workers]:
            proc.kill()
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2", "3"]
    assert {r["worker"] for r in rows} == {"w1", "w2"}  # both workers ran trials
    ran = [m for name in ("w1", "w2") for m in re.findall(rf"^{name}: trial (\d+) ", outputs[name], re.M)]
    assert sorted(ran) == ["0", "1", "2", "3"]  # no trial ran twice
    assert "rank  trial  val_accuracy" in outputs["chief"]


def test_chief_gives_up_when_no_worker_connects(tiny_recipe, tmp_path, cli):
    (port,) = free_ports(1)
    code, _, err = cli("tune", tiny_recipe(), "--out", tmp_path / "c", "--role", "chief",
                       "--oracle", f"127.0.0.1:{port}", "--poll-seconds", 0.2, "--wait-workers", 1)
    assert code == 2 and "No worker connected" in err


def test_worker_gives_up_when_no_chief_answers(tiny_recipe, tmp_path, cli):
    (port,) = free_ports(1)
    code, _, err = cli("tune", tiny_recipe(), "--out", tmp_path / "w", "--role", "worker",
                       "--oracle", f"127.0.0.1:{port}", "--connect-timeout", 1)
    assert code == 2 and "No kzoo tune chief answered" in err


def test_first_random_trial_is_the_recipe_as_written(tmp_path):
    oracle = make_oracle(tmp_path)
    first = oracle.create_trial("t")
    assert first.hyperparameters.values == {"optimizer.lr": pytest.approx(1e-3)}  # the space's default
    second = oracle.create_trial("u")
    assert second.hyperparameters.values["optimizer.lr"] != pytest.approx(1e-3)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_does_not_hold_up_the_chief(tiny_recipe, tmp_path):
    import os
    import signal
    import time

    path = tiny_recipe(epochs=3)
    (port,) = free_ports(1)
    out = tmp_path / "k"
    common = ("tune", path, "--max-trials", 3, "--out", out, "--oracle", f"127.0.0.1:{port}")
    chief = kzoo_process(*common, "--role", "chief", "--poll-seconds", 0.5, "--wait-workers", 120,
                         "--trial-timeout", 30)
    doomed = kzoo_process(*common, "--role", "worker", "--tuner-id", "doomed")
    survivor = None
    try:
        first = out / "search" / "trial_0" / "trial.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not first.exists():
            time.sleep(0.2)
        assert first.exists()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate(timeout=30)
        survivor = kzoo_process(*common, "--role", "worker", "--tuner-id", "survivor")
        survivor_out = survivor.communicate(timeout=300)[0]
        chief_out = chief.communicate(timeout=60)[0]
    finally:
        for proc in (chief, doomed, survivor):
            if proc is not None:
                proc.kill()
    assert chief.returncode == 0 and survivor.returncode == 0, chief_out[-2000:] + survivor_out[-2000:]
    assert "gave no result in 30 s; handing it out again" in chief_out
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2"]
    assert {r["status"] for r in rows} == {"completed"} and {r["worker"] for r in rows} == {"survivor"}


def test_a_worker_waits_while_a_trial_that_may_come_back_is_out(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=2)
    lost = oracle.create_trial("dead")
    finish(oracle, oracle.create_trial("alive"), 0.5)
    assert oracle.create_trial("alive").status == "IDLE"  # not STOPPED: "dead" may never report
    oracle.expire_stale(0)
    again = oracle.create_trial("alive")
    assert again.status == "RUNNING" and again.trial_id == lost.trial_id
    finish(oracle, again, 0.7)
    assert oracle.create_trial("alive").status == "STOPPED"
    assert not oracle.tuner_ids and not oracle.ongoing_trials
