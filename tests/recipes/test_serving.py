"""One path from training to serving, for every shipped recipe that runs offline: `kzoo run`
(shortened), then `kzoo eval` reproduces the run's test accuracy exactly, `kzoo export` writes a
SavedModel and a TFLite model that pass their check, and `kzoo predict` on the raw test inputs
agrees with the evaluation's predictions. All are slow tests (2-3 minutes together for the
three small recipes, which `.ci/run` runs after `make test`)."""

import csv
import json
import os

import numpy as np
import pytest

# (recipe, overrides that shorten it): one epoch, one of each stage, the shipped model otherwise.
TRANSFER = ['finetune.stages=["head:1@1e-3", "all:1@3e-4"]', "finetune.pretrain.epochs=1",
            "finetune.scratch_baseline=false"]
FAST = [("mlp-digits", ["epochs=1"]), ("cnn-digits", ["epochs=1"]), ("transfer-mnist-digits", TRANSFER)]
SLOW = [("densenet-digits", ["epochs=1"]), ("fixup-digits", ["epochs=1"]), ("fixup-mnist5k", ["epochs=1"])]


def _serve(cli, tmp_path, name, overrides):
    from kzoo.evaluate import load_run, predict_split, test_data, test_split

    run = str(tmp_path / name)
    sets = [arg for o in overrides for arg in ("--set", o)]
    code, _, err = cli("run", name, *sets, "--out", run)
    assert code == 0, err
    metrics = json.load(open(os.path.join(run, "metrics.json")))

    code, _, err = cli("eval", run)
    assert code == 0, err
    evaluated = json.load(open(os.path.join(run, "eval.json")))
    assert evaluated["test_accuracy"] == metrics["test_accuracy"]  # exactly: the same model on the same split

    for fmt in ("savedmodel", "tflite"):
        code, out, err = cli("export", run, "--format", fmt)
        assert code == 0, err
        assert "exported" in out and os.path.exists(os.path.join(run, "export", "savedmodel" if fmt == "savedmodel"
                                                                  else "model.tflite"))
    assert not [f for f in os.listdir(os.path.join(run, "export")) if f.startswith(".kzoo-export-")]

    recipe, model = load_run(run)
    probs, labels = predict_split(model, test_data(recipe))
    raw = test_split(recipe)  # the raw test inputs, as a user has them
    np.testing.assert_array_equal(raw.y_test, labels)
    np.savez(tmp_path / "raw.npz", x=raw.x_test)
    code, _, err = cli("predict", run, str(tmp_path / "raw.npz"), "--out", str(tmp_path / "predictions.csv"))
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    names = metrics["class_names"]
    assert [r["label"] for r in rows] == [names[i] for i in probs.argmax(axis=1)]
    assert np.mean([names.index(r["label"]) == y for r, y in zip(rows, labels)]) == pytest.approx(
        metrics["test_accuracy"], abs=1e-6)
    return metrics


@pytest.mark.slow  # 30-90 s a recipe on 2 cores; .ci/run runs these three
@pytest.mark.parametrize("name,overrides", FAST, ids=[n for n, _ in FAST])
def test_a_shipped_recipe_runs_evaluates_exports_and_predicts_raw_inputs(cli, tmp_path, name, overrides):
    metrics = _serve(cli, tmp_path, name, overrides)
    if name == "transfer-mnist-digits":  # the model frames the raw 8x8 digits itself
        assert metrics["num_train"] == 50 and metrics["dataset"] == "digits"


@pytest.mark.slow  # ResNet-20s and a DenseNet: over the default suite's budget
@pytest.mark.parametrize("name,overrides", SLOW, ids=[n for n, _ in SLOW])
def test_the_larger_shipped_recipes_serve_as_they_evaluate(cli, tmp_path, name, overrides):
    _serve(cli, tmp_path, name, overrides)


def test_every_offline_recipe_is_covered():
    from kzoo.data.catalog import DATASETS
    from kzoo.recipes import list_recipes, load

    offline = {n for n in list_recipes() if load(n).data.dataset in DATASETS}
    assert offline == {n for n, _ in FAST + SLOW}
