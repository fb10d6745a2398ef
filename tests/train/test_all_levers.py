"""One recipe setting every accuracy lever at once (label smoothing, balanced class weights,
MixUp, CutMix, RandAugment, random erasing, color jitter, EMA, gradient accumulation, the best
checkpoint and extra metrics) trains on the plain path, the staged path and as a search, and
`kzoo eval` of a finished run reproduces the `test_accuracy` its `metrics.json` reports: the
saved model is the one (averaged, best-epoch) model the metrics describe."""

import csv
import json
import zipfile

import pytest

ALL_LEVERS = """
name = "all-levers"
seed = 0
epochs = 2
checkpoint = "best"
metrics = ["accuracy", "top5", "macro_f1"]

[data]
dataset = "digits"
batch_size = 64

[data.augment]
mixup = 0.2
cutmix = 1.0
policy = "randaugment"
policy_magnitude = 5.0
erasing = 0.25
color_jitter = 0.2

[model]
name = "cnn"
filters = [8, 16]
convs_per_stage = 1

[optimizer]
name = "adam"
lr = 0.003
ema = 0.9
accumulate = 2

[loss]
label_smoothing = 0.1
class_weight = "balanced"
"""

STAGED = """
[finetune]
stages = "head:1@1e-3, all:1@1e-4"
"""

TUNE = """
[tune]
"optimizer.lr" = [0.003, 0.01]
"""


def _json(path):
    with open(path) as f:
        return json.load(f)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _train_then_eval(cli, tmp_path, text):
    recipe = tmp_path / "all-levers.toml"
    recipe.write_text(text)
    out = tmp_path / "run"
    code, _, err = cli("run", recipe, "--out", out, "--quiet")
    assert code == 0, err
    metrics = _json(out / "metrics.json")
    code, _, err = cli("eval", out)
    assert code == 0, err
    return out, metrics, _json(out / "eval.json")


def _check_levers_ran(out, metrics):
    # The extra metrics are logged every epoch, for validation too, and tested.
    rows = _rows(out / "history.csv")
    assert len(rows) == 2
    for key in ("top5", "macro_f1", "val_top5", "val_macro_f1"):
        assert all(row.get(key) not in (None, "") for row in rows), key
    assert 0 <= metrics["test_macro_f1"] <= 1 and metrics["test_top5"] >= metrics["test_accuracy"]
    # The image augmentations travel inside the saved model (active only in training).
    with zipfile.ZipFile(out / "model.keras") as archive:
        config = archive.read("config.json").decode()
    for layer in ("RandAugment", "RandomErasing", "RandomColorJitter"):
        assert f'"{layer}"' in config, layer


@pytest.mark.slow  # 11 s (a run and an eval; 2 cores, load 4): over the default suite's per-test budget
def test_plain_run_with_every_lever_and_eval_reproduces_its_test_accuracy(cli, tmp_path):
    out, metrics, report = _train_then_eval(cli, tmp_path, ALL_LEVERS)
    _check_levers_ran(out, metrics)
    assert report["test_accuracy"] == metrics["test_accuracy"]
    assert report["num_test"] == metrics["num_test"]


@pytest.mark.slow  # 21 s (2 cores, load 4): over the default suite's per-test budget
def test_staged_run_with_every_lever_and_eval_reproduces_its_test_accuracy(cli, tmp_path):
    out, metrics, report = _train_then_eval(cli, tmp_path, ALL_LEVERS + STAGED)
    _check_levers_ran(out, metrics)
    assert metrics["stages"] == ["head:1@0.001", "all:1@0.0001"]
    assert report["test_accuracy"] == metrics["test_accuracy"]


@pytest.mark.slow  # 25 s (two trials; 2 cores, load 4): over the default suite's per-test budget
def test_two_trial_search_with_every_lever_on_val_macro_f1(cli, tmp_path):
    recipe = tmp_path / "all-levers.toml"
    recipe.write_text(ALL_LEVERS + TUNE)
    out = tmp_path / "search"
    code, stdout, err = cli("tune", recipe, "--max-trials", 2, "--objective", "val_macro_f1", "--out", out)
    assert code == 0, err
    rows = _rows(out / "trials.csv")
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"completed"}
    assert sorted(float(r["optimizer.lr"]) for r in rows) == [0.003, 0.01]
    assert all(0 <= float(r["val_macro_f1"]) <= 1 for r in rows)
    assert "val_macro_f1" in stdout
