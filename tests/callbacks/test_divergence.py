"""Divergence guard and adaptive learning rate on recipe runs (mlp-digits)."""

import json
import math
import os

import pytest

TOO_HIGH = ["--set", "optimizer.name=sgd", "--set", "optimizer.lr=10",
            # Without batch norm: with it the hidden layers are scale-invariant and SGD at 10
            # stalls near chance (36% test accuracy) instead of blowing up the loss.
            "--set", "model.normalization=none",
            "--set", "callbacks.divergence_guard={}", "--set", "callbacks.update_ratio={}"]


def test_far_too_high_learning_rate_stops_as_diverged_with_a_diagnosis(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = cli("run", "mlp-digits", *TOO_HIGH, "--epochs", 5, "--quiet", "--out", out)
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"] == "diverged"
    assert metrics["diverged_at"]["epoch"] == 1 and metrics["epochs_run"] == 1
    assert "head_dense" in metrics["diverged_layers"]
    paragraph = metrics["diagnosis"]
    assert paragraph in stdout
    assert paragraph.startswith(f"Training diverged in epoch 1 at step {metrics['diverged_at']['step']} ")
    for advice in ("lower the learning rate", "gradient clipping", "initializer"):
        assert advice in paragraph
    for artifact in ("recipe.toml", "history.csv", "model.keras", "curves.png", "dynamics.png"):
        assert (out / artifact).exists(), artifact
    # the best (here: the starting) weights were restored, so the saved model is finite
    assert math.isfinite(metrics["test_loss"]) and metrics["test_loss"] < 10


@pytest.fixture(scope="module")
def adaptive_runs(tmp_path_factory):
    """The tuned mlp-digits, and the same recipe from 100x below and 30x above its rate, adaptive."""
    from kzoo.recipes import load, run

    tuned = load("mlp-digits", ["callbacks.divergence_guard={}"])
    lr = tuned.optimizer.lr
    results = {"tuned": run(tuned, out=str(tmp_path_factory.mktemp("tuned")), verbose=0)}
    for label, factor in (("below", 1 / 100), ("above", 30)):
        recipe = load("mlp-digits", [f"optimizer.lr={lr * factor}", "callbacks.update_ratio={adaptive=true}"])
        assert recipe.epochs == tuned.epochs
        results[label] = run(recipe, out=str(tmp_path_factory.mktemp(label)), verbose=0)
    return results


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_guard_leaves_a_healthy_run_alone(adaptive_runs):
    metrics = adaptive_runs["tuned"].metrics
    assert "stopped" not in metrics and metrics["epochs_run"] == 30


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
@pytest.mark.parametrize("start", ["below", "above"])
def test_adaptive_monitor_recovers_a_mistuned_learning_rate(adaptive_runs, start):
    tuned = adaptive_runs["tuned"].metrics["test_accuracy"]
    result = adaptive_runs[start]
    assert result.metrics["test_accuracy"] >= tuned - 0.02
    multiplier = result.history[-1]["lr_multiplier"]
    assert multiplier > 10 if start == "below" else multiplier < 1 / 10
    assert os.path.exists(os.path.join(result.out_dir, "dynamics.png"))


def test_guard_restores_the_best_epochs_weights_when_the_loss_explodes():
    import keras
    import numpy as np

    from kzoo.callbacks import DivergenceGuard

    rng = np.random.RandomState(0)
    x = rng.randn(64, 4).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], "float32"))[:, None]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    saved = {}
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: saved.__setitem__(e, model.get_weights()))
    # from the fourth epoch on the rate is absurd: the loss blows up within a few steps
    sabotage = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: setattr(model.optimizer, "learning_rate", 50.0) if e == 3 else None)
    guard = DivergenceGuard(factor=10.0, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=6, shuffle=False, verbose=0,
                        callbacks=[sabotage, record, guard])
    assert guard.stopped["epoch"] == 4 and len(history.history["loss"]) == 4
    assert guard.best_epoch == 2  # the third epoch had the lowest loss before the blow-up
    for a, b in zip(saved[2], model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert guard.kzoo_metrics["stopped"] == "diverged"
    assert "epoch 4" in guard.diagnosis and "Restored the weights from epoch 3" in guard.diagnosis
