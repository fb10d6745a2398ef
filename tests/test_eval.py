"""`kzoo eval`: test metrics and plots of one run, calibration, ensembles, TTA, MC dropout."""

import json
import os
import shutil

import numpy as np
import pytest

from kzoo.calibration import expected_calibration_error, reliability_bins
from kzoo.plots_eval import most_confident_errors

TINY_CNN = {"model.filters": [8, 16], "model.convs_per_stage": 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny cnn-digits runs (seeds 0, 1: augmentation and dropout) and an MLP without either."""
    from kzoo.recipes import load, run

    root = tmp_path_factory.mktemp("eval-runs")
    paths = {}
    for seed in (0, 1):
        recipe = load("cnn-digits", {"epochs": 4, "seed": seed, **TINY_CNN})
        paths[f"cnn{seed}"] = run(recipe, out=str(root / f"cnn{seed}"), verbose=0).out_dir
    recipe = load("mlp-digits", {"epochs": 2, "model.dropout": 0.0, "model.depth": 1, "model.width": 32})
    paths["mlp"] = run(recipe, out=str(root / "mlp"), verbose=0).out_dir
    return paths


def _read(path):
    with open(path) as f:
        return json.load(f)


# -- calibration -----------------------------------------------------------------------------

def test_ece_of_overconfident_predictions_is_the_confidence_gap():
    probs = np.tile([0.9, 0.1], (100, 1))
    labels = np.array([0, 1] * 50)  # half right at confidence 0.9
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_ece_is_zero_when_accuracy_matches_confidence_in_every_bin():
    probs = np.concatenate([np.tile([0.8, 0.2], (100, 1)), np.tile([0.3, 0.7], (50, 1))])
    labels = np.array([0] * 80 + [1] * 20 + [1] * 35 + [0] * 15)  # 80% right at 0.8, 70% at 0.7
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_weights_each_bin_by_its_share():
    probs = np.concatenate([np.tile([0.95, 0.05], (50, 1)), np.tile([0.6, 0.4], (50, 1))])
    labels = np.array([0] * 50 + [0] * 30 + [1] * 20)  # gaps 0.05 and 0.0, half the examples each
    bins = reliability_bins(probs, labels, bins=10)
    assert bins.count.sum() == 100
    assert bins.count[9] == 50 and bins.count[5] == 50
    assert np.isnan(bins.accuracy[0])  # empty bins are not counted
    assert bins.ece == pytest.approx(0.025)


def test_calibration_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        expected_calibration_error(np.ones((3, 2)) / 2, [0, 1])
    with pytest.raises(ValueError, match="bins=0"):
        expected_calibration_error(np.ones((2, 2)) / 2, [0, 1], bins=0)


def test_most_confident_errors_are_wrong_and_sorted_by_confidence():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 0, 0, 1, 1])  # wrong: 1 (0.8), 2 (0.6), 4 (0.55)
    assert most_confident_errors(probs, labels).tolist() == [1, 2, 4]
    assert most_confident_errors(probs, labels, k=2).tolist() == [1, 2]


# -- one run ---------------------------------------------------------------------------------

def test_eval_of_one_run_matches_training_metrics_and_writes_plots(runs, cli):
    import matplotlib.image

    run_dir = runs["cnn0"]
    code, out, err = cli("eval", run_dir)
    assert code == 0, err
    ev, metrics = _read(os.path.join(run_dir, "eval.json")), _read(os.path.join(run_dir, "metrics.json"))
    # The test split is rebuilt from the recipe exactly: same accuracy and loss as at training time.
    assert ev["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert ev["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-4)
    assert ev["num_test"] == metrics["num_test"]
    confusion = np.array(ev["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == ev["num_test"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(ev["test_accuracy"], abs=1e-6)
    assert [c["support"] for c in ev["per_class"]] == confusion.sum(axis=1).tolist()
    recalls = [c["recall"] for c in ev["per_class"]]
    assert np.dot(recalls, confusion.sum(axis=1)) / confusion.sum() == pytest.approx(ev["test_accuracy"], abs=1e-5)
    # ECE recomputed here from the saved model's probabilities, bin by bin over (lo, hi].
    from kzoo.evaluate import load_run, predict, test_split

    recipe, model = load_run(run_dir)
    split = test_split(recipe)
    probs = predict(model, split.x_test)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == split.y_test
    edges = np.linspace(0, 1, ev["bins"] + 1)
    gaps = [abs(correct[m].mean() - confidence[m].mean()) * m.sum()
            for m in ((confidence > lo) & (confidence <= hi) for lo, hi in zip(edges[:-1], edges[1:])) if m.any()]
    assert ev["ece"] == pytest.approx(sum(gaps) / len(probs), abs=1e-6)
    for name in ("confusion.png", "reliability.png", "errors.png"):
        image = matplotlib.image.imread(os.path.join(run_dir, name))
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01
    assert f"accuracy {ev['test_accuracy']:.4f}" in out
    assert out.count("\n9 ") == 1  # the per-class table has a row per class
    with open(os.path.join(run_dir, "report.html")) as f:
        assert "Evaluation (kzoo eval)" in f.read()


def test_tta_with_one_view_is_plain_prediction_and_views_are_reproducible(runs):
    from kzoo.evaluate import load_run, predict, test_split, tta_predict

    recipe, model = load_run(runs["cnn0"])
    x = test_split(recipe).x_test[:64]
    plain = predict(model, x)
    np.testing.assert_array_equal(tta_predict(model, x, 1), plain)
    four = tta_predict(model, x, 4, seed=3)
    np.testing.assert_allclose(tta_predict(model, x, 4, seed=3), four, atol=1e-7)
    assert np.abs(four - plain).max() > 1e-3  # the augmented views change the predictions
    np.testing.assert_allclose(four.sum(axis=1), 1.0, atol=1e-5)


def test_eval_tta_reports_accuracy_with_and_without(runs, cli):
    code, out, err = cli("eval", runs["cnn1"], "--tta", 3)
    assert code == 0, err
    ev = _read(os.path.join(runs["cnn1"], "eval.json"))
    assert ev["tta"]["views"] == 3
    assert ev["tta"]["accuracy_without"] == ev["test_accuracy"]
    assert f"accuracy {ev['test_accuracy']:.4f} -> {ev['tta']['accuracy']:.4f}" in out


def test_tta_needs_augmentation_in_the_recipe(runs, cli):
    code, out, err = cli("eval", runs["mlp"], "--tta", 4)
    assert code == 2
    assert "augmentation" in err and err.strip().endswith("tta=4") and len(err.strip().splitlines()) == 1


def test_mc_dropout_keeps_normalization_in_inference_mode_and_the_model_unchanged(runs):
    from kzoo.evaluate import load_run, mc_dropout_model, mc_dropout_predict, predict, test_split

    recipe, model = load_run(runs["cnn0"])
    x = test_split(recipe).x_test[:64].astype("float32")
    before = predict(model, x)
    mc = mc_dropout_predict(model, x, samples=6, seed=1)
    assert mc["mutual_information"].mean() > 0  # the passes disagree: dropout was on
    np.testing.assert_allclose(mc["probs"].sum(axis=1), 1.0, atol=1e-5)
    again = mc_dropout_predict(model, x, samples=6, seed=1)
    np.testing.assert_allclose(again["probs"], mc["probs"], atol=1e-6)
    np.testing.assert_array_equal(predict(model, x), before)

    # With a dropout rate of 0 the stochastic model is the deterministic one: batch normalization
    # used its moving statistics, not the batch's.
    dropout = model.get_layer("head_dropout")
    rate, dropout.rate = dropout.rate, 0.0
    try:
        np.testing.assert_allclose(np.asarray(mc_dropout_model(model)(x)), before, atol=1e-5)
    finally:
        dropout.rate = rate


def test_eval_mc_dropout_reports_uncertainty(runs, cli):
    code, out, err = cli("eval", runs["cnn0"], "--mc-dropout", 4)
    assert code == 0, err
    mc = _read(os.path.join(runs["cnn0"], "eval.json"))["mc_dropout"]
    assert mc["samples"] == 4 and mc["mean_mutual_information"] > 0  # the passes disagree
    # The reported figures are those of the passes `--seed 0` draws.
    from kzoo.evaluate import load_run, mc_dropout_predict, test_split

    recipe, model = load_run(runs["cnn0"])
    again = mc_dropout_predict(model, test_split(recipe).x_test, samples=4, seed=0)
    assert mc["mean_entropy"] == pytest.approx(float(again["entropy"].mean()), abs=1e-5)
    assert mc["mean_mutual_information"] == pytest.approx(float(again["mutual_information"].mean()), abs=1e-5)
    assert "MC dropout, 4 passes" in out


def test_mc_dropout_needs_dropout(runs, cli):
    code, _, err = cli("eval", runs["mlp"], "--mc-dropout", 5)
    assert code == 2 and "dropout" in err


# -- ensembles -------------------------------------------------------------------------------

def test_ensemble_averages_member_probabilities(runs, cli, tmp_path):
    from kzoo.evaluate import accuracy, evaluate_ensemble, load_run, predict, test_split

    members = [runs["cnn0"], runs["cnn1"], runs["mlp"]]
    result = evaluate_ensemble(members, out=str(tmp_path / "ens"))
    split = None
    probs = []
    for run_dir in members:
        recipe, model = load_run(run_dir)
        split = split or test_split(recipe)
        probs.append(predict(model, split.x_test))
    expected = accuracy(np.mean(probs, axis=0), split.y_test)
    assert result["ensemble"]["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert [m["test_accuracy"] for m in result["members"]] == pytest.approx(
        [accuracy(p, split.y_test) for p in probs], abs=1e-6)
    assert result["mean_member_accuracy"] == pytest.approx(np.mean([accuracy(p, split.y_test) for p in probs]), abs=1e-6)
    assert _read(str(tmp_path / "ens" / "ensemble.json"))["ensemble"] == result["ensemble"]
    assert os.path.isfile(tmp_path / "ens" / "confusion.png")

    code, out, err = cli("eval", runs["cnn0"], runs["cnn1"], "--tta", 2)
    assert code == 0, err
    assert runs["cnn0"] in out and runs["cnn1"] in out
    assert "mean member" in out and "ensemble of 2 (mean probability)" in out and "TTA x2" in out


def test_ensemble_refuses_runs_with_different_test_splits(runs, cli, tmp_path):
    other = tmp_path / "other-split"
    shutil.copytree(runs["cnn1"], other)
    recipe = (other / "recipe.toml").read_text()
    (other / "recipe.toml").write_text(recipe.replace("split_seed = 0", "split_seed = 5"))
    code, _, err = cli("eval", runs["cnn0"], str(other))
    assert code == 2 and "test split" in err and str(other) in err


def test_eval_errors_are_one_line(runs, cli, tmp_path):
    code, _, err = cli("eval", tmp_path / "missing")
    assert code == 2 and "No such run directory" in err
    other = tmp_path / "small.npz"
    np.savez(other, x_train=np.zeros((40, 4, 4, 1)), y_train=np.arange(40) % 10)
    code, _, err = cli("eval", runs["cnn0"], "--data", other)
    assert code == 2 and "(4, 4, 1)" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("eval", runs["cnn0"], runs["cnn1"], "--mc-dropout", 3)
    assert code == 2 and "one run" in err
