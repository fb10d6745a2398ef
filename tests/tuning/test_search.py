"""kzoo tune: progress, artifacts, export that reproduces, failed trials, resume, memory."""

import csv
import json
import os
import signal
import time

import pytest

from kzoo.recipes import load, run
from kzoo.tuning.search import search

from .conftest import kzoo_process


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def rss_mb():
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_search_reports_each_trial_and_best_export_reproduces(tiny_recipe, tmp_path, capsys):
    rss = []
    result = search(tiny_recipe(epochs=1), max_trials=4, out=str(tmp_path / "s"),
                    export=str(tmp_path / "best.toml"), on_trial_end=lambda row: rss.append(rss_mb()))
    out = capsys.readouterr().out
    # one line per finished trial with i/N, values, score, best so far, elapsed and ETA
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("optimizer.lr=" in line and "val_accuracy=" in line and "best " in line and "eta " in line
               for line in lines)
    assert "rank  trial  val_accuracy" in out  # the ranked table
    rows = read_rows(tmp_path / "s" / "trials.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert os.path.getsize(tmp_path / "s" / "trials.png") > 1000
    scores = [float(r["val_accuracy"]) for r in rows]
    assert result.best["val_accuracy"] == pytest.approx(max(scores))
    assert [t["val_accuracy"] for t in result.trials] == sorted(scores, reverse=True)

    # the export is a plain recipe holding the best trial's values; running it reproduces the score
    best = load(str(tmp_path / "best.toml"))
    assert best.optimizer.lr == pytest.approx(result.best["optimizer.lr"])
    assert best.model["width"] == result.best["model.width"]
    replay = run(best, out=str(tmp_path / "replay"), verbose=0)
    assert abs(replay.metrics["best_val_accuracy"] - result.best["val_accuracy"]) <= 0.005

    # memory is released between trials (the 15-trial version is test_memory_is_flat_over_15_trials)
    assert rss[-1] <= rss[1] * 1.15


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_failed_trials_are_recorded_with_their_reason_and_the_search_goes_on(tiny_recipe, tmp_path, cli):
    path = tiny_recipe(tune='''
"model.norm_position" = ["before", "middle"]
"optimizer.lr" = [0.003, 1e30]
''')
    code, out, err = cli("tune", path, "--tuner", "grid", "--max-trials", 4, "--out", tmp_path / "g")
    assert code == 0, err
    rows = {(r["model.norm_position"], float(r["optimizer.lr"])): r for r in read_rows(tmp_path / "g" / "trials.csv")}
    assert len(rows) == 4
    assert rows[("before", 0.003)]["status"] == "completed"
    assert rows[("before", 1e30)]["status"] == "failed" and "NaN" in rows[("before", 1e30)]["reason"]
    for lr in (0.003, 1e30):
        assert rows[("middle", lr)]["status"] == "failed"
        assert "bad combination" in rows[("middle", lr)]["reason"] and "norm_position" in rows[("middle", lr)]["reason"]
    assert out.count("FAILED (") == 3
    assert "4 trials (3 failed)" in out


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_resume_after_sigkill_keeps_finished_trials_and_reruns_the_interrupted_one(tiny_recipe, tmp_path, cli):
    path = tiny_recipe(epochs=3)
    out_dir = tmp_path / "r"
    proc = kzoo_process("tune", path, "--max-trials", 3, "--out", out_dir)
    try:
        second = out_dir / "search" / "trial_1" / "trial.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not second.exists():
            time.sleep(0.2)
        assert second.exists(), "the second trial never started"
        time.sleep(0.5)  # inside the second trial's training
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    before = read_rows(out_dir / "trials.csv")
    assert len(before) == 1, "the kill should land while the second trial runs"
    assert json.loads(second.read_text())["status"] == "RUNNING"

    finished_now = []
    result = search(path, max_trials=3, out=str(out_dir), on_trial_end=finished_now.append, verbose=0)
    # trial 1 is not run again; the interrupted trial and the last one are
    assert sorted(r["trial_id"] for r in finished_now) == ["1", "2"]
    rows = read_rows(out_dir / "trials.csv")
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    assert rows[0] == before[0]
    assert {r["status"] for r in rows} == {"completed"}
    assert len(result.trials) == 3

    # another recipe in the same directory is refused; --overwrite starts afresh
    other = tiny_recipe(tune='"model.width" = [4, 8]', name="other.toml")
    code, _, err = cli("tune", other, "--max-trials", 1, "--out", out_dir)
    assert code == 2 and "different recipe" in err
    code, _, err = cli("tune", path, "--max-trials", 1, "--out", out_dir, "--overwrite", "--quiet")
    assert code == 0, err
    assert len(read_rows(out_dir / "trials.csv")) == 1


@pytest.mark.slow
def test_memory_is_flat_over_15_trials(tiny_recipe, tmp_path):
    rss = []
    search(tiny_recipe(epochs=1), max_trials=15, out=str(tmp_path / "m"), verbose=0,
           on_trial_end=lambda row: rss.append(rss_mb()))
    assert len(rss) == 15
    assert rss[14] <= rss[2] * 1.15, rss


STAGED_TUNE = '''
"finetune.stages" = ["head:1@3e-3, all:1@1e-3", "head:1@3e-2, all:1@3e-3"]
'''
STAGED = '''
[finetune]
stages = ["head:1@3e-3", "all:1@1e-3"]
'''


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_search_on_a_staged_recipe_trains_the_stages_and_best_export_reproduces_exactly(tiny_recipe, tmp_path):
    path = tiny_recipe(tune=STAGED_TUNE, epochs=2, extra=STAGED)
    result = search(path, tuner="grid", max_trials=2, out=str(tmp_path / "s"), export=str(tmp_path / "best.toml"),
                    verbose=0)
    assert len(result.trials) == 2 and {t["status"] for t in result.trials} == {"completed"}
    best = load(str(tmp_path / "best.toml"))
    assert best.finetune.stages == [s.strip() for s in result.best["finetune.stages"].split(",")]
    replay = run(best, out=str(tmp_path / "replay"), verbose=0)
    assert [row["stage"] for row in replay.history] == [1, 2]
    # the search scored the same staged training the export runs: the same number, not a near one
    assert replay.metrics["best_val_accuracy"] == round(result.best["val_accuracy"], 6)
