"""Training levers of the engine: label smoothing, class weights, weight averaging (EMA),
gradient accumulation, the best-epoch checkpoint and the extra metrics. Each test fails when
its lever is silently off."""

import csv
import json
import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import kzoo.recipes
from kzoo.errors import RecipeError
from kzoo.optimizers import OPTIMIZERS, build_optimizer
from kzoo.runs import averaged_weights
from kzoo.train import Session, compile_stage, fit_plan, plan
from kzoo.train.losses import ClassificationLoss, class_weights
from kzoo.train.metrics import Accuracy, MacroF1, TopKAccuracy, metric_stats, metric_values

# A small, fast variant of mlp-digits: one hidden layer, no XLA compile, a constant rate.
SMALL = {"epochs": 2, "jit_compile": False, "model.depth": 1, "model.width": 16, "model.dropout": 0.0,
         "schedule": {"name": "constant"}, "steps_per_execution": 1, "data.batch_size": 256}


def _recipe(**overrides):
    return kzoo.recipes.load("mlp-digits", {**SMALL, **overrides})


def _tiny_model(inputs=3, classes=3):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(classes, activation="softmax")])


def _compiled(recipe, data=None, inputs=3, classes=3):
    model = _tiny_model(inputs, classes)
    compile_stage(model, recipe, plan(recipe)[0][0], None, 4, setup=None, data=data)
    return model


X = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [-1.5, 0.3, 0.2], [0.1, 0.1, 0.1]], "float32")
Y = np.array([0, 1, 2, 2])


def _cross_entropy(target, probs):
    return -np.sum(target * np.log(np.clip(probs, 1e-7, 1 - 1e-7)), axis=-1)


# -- [loss] ------------------------------------------------------------------------------------

def test_label_smoothing_changes_the_loss_exactly_as_the_formula_says():
    model = _compiled(_recipe(**{"loss.label_smoothing": 0.2}))
    probs = model.predict(X, verbose=0).astype("float64")
    target = np.eye(3)[Y] * 0.8 + 0.2 / 3
    expected = _cross_entropy(target, probs).mean()
    assert model.evaluate(X, Y, verbose=0, return_dict=True)["loss"] == pytest.approx(expected, rel=1e-5)
    plain = _cross_entropy(np.eye(3)[Y], probs).mean()
    assert abs(expected - plain) > 1e-3  # the lever matters on this batch
    # Soft labels (MixUp/CutMix batches) are smoothed the same way: one-hot rows give the same loss.
    soft = model.evaluate(X, np.eye(3, dtype="float32")[Y], verbose=0, return_dict=True)["loss"]
    assert soft == pytest.approx(expected, rel=1e-5)


def test_soft_labels_give_the_cross_entropy_of_the_mixture():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], "float32")
    mixed = np.array([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]], "float32")
    loss = ClassificationLoss(label_smoothing=0.1)
    expected = _cross_entropy(mixed * 0.9 + 0.1 / 3, probs.astype("float64")).mean()
    assert float(loss(mixed, probs)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.array([[0], [1]]), probs)) == pytest.approx(float(loss([0, 1], probs)), rel=1e-6)


def test_balanced_class_weights_follow_the_training_counts_and_weigh_the_loss():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    data = SimpleNamespace(info=SimpleNamespace(class_names=["a", "b", "c"]), train_labels=labels)
    assert class_weights("balanced", ["a", "b", "c"], labels) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    model = _compiled(_recipe(**{"loss.class_weight": "balanced"}), data)
    probs = model.predict(X, verbose=0).astype("float64")
    weights = np.array([10 / 18, 10 / 9, 10 / 3])[Y]
    expected = (weights * _cross_entropy(np.eye(3)[Y], probs)).mean()  # Keras's class_weight: over the batch
    assert model.evaluate(X, Y, verbose=0, return_dict=True)["loss"] == pytest.approx(expected, rel=1e-5)
    table = _compiled(_recipe(**{"loss.class_weight": {"c": 4.0}}), data)
    expected = (np.array([1.0, 1.0, 4.0])[Y] * _cross_entropy(np.eye(3)[Y], probs)).mean()
    assert table.evaluate(X, Y, verbose=0, return_dict=True)["loss"] == pytest.approx(expected, rel=1e-5)


def test_class_weight_naming_an_unknown_class_is_one_line_and_exit_2_before_training(cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("run", "mlp-digits", "--set", "loss.class_weight={cat = 2.0}", "--out", out, "--quiet")
    assert code == 2
    assert "loss.class_weight names a class the dataset does not have" in err and "class_weight.cat=2.0" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"loss.label_smoothing": 1.0}, "loss.label_smoothing must be in [0, 1)"),
    ({"loss.class_weight": "inverse"}, "loss.class_weight must be none, balanced or a table"),
    ({"loss.class_weight": {"3": -1.0}}, "loss.class_weight.3 must be a finite number >= 0"),
    ({"loss.smoothing": 0.1}, "Unknown key 'loss.smoothing'"),
    ({"optimizer.ema": 1.0}, "optimizer.ema must be in [0, 1)"),
    ({"optimizer.accumulate": 0}, "optimizer.accumulate must be at least 1"),
    ({"optimizer.accumulate": 2, "strategy": "multiworker"}, "optimizer.accumulate > 1 runs on one device only"),
    ({"checkpoint": "worst"}, "checkpoint must be last or best"),
    ({"checkpoint": "best", "data.validation_split": 0.0}, "needs a validation split"),
    ({"metrics": ["top7"]}, "Unknown metric 'top7' in metrics. Valid: accuracy, top3, top5, macro_f1"),
    ({"optimizer.ema": 0.99, "callbacks": {"early_stopping": {"restore_best_weights": True}}},
     "use checkpoint = \"best\" instead"),
])
def test_levers_it_cannot_honour_are_refused_at_load_in_one_line(overrides, message):
    with pytest.raises(RecipeError) as info:
        kzoo.recipes.load("mlp-digits", overrides)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "Received:" in text or text.startswith("Unknown key")  # an unknown key lists the valid ones


def test_levers_round_trip_through_recipe_toml(tmp_path):
    recipe = _recipe(**{"loss.label_smoothing": 0.1, "loss.class_weight": {"3": 2.0}, "optimizer.ema": 0.99,
                        "optimizer.accumulate": 2, "checkpoint": "best", "metrics": ["macro_f1", "top5"]})
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    again = kzoo.recipes.load(str(path))
    assert again.loss == recipe.loss and again.optimizer == recipe.optimizer
    assert again.metrics == ["accuracy", "macro_f1", "top5"] and again.checkpoint == "best"


# -- [optimizer] ema and accumulate ----------------------------------------------------------

@pytest.mark.parametrize("name", OPTIMIZERS.list())
def test_every_kzoo_optimizer_composition_keeps_ema_and_accumulation(name):
    cfg = _recipe(**{"optimizer.name": name, "optimizer.ema": 0.9, "optimizer.accumulate": 3}).optimizer
    optimizer = build_optimizer(cfg, lr_multipliers={"dense": 0.5})  # per-group rates: a rebuilt composition
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9 and optimizer.gradient_accumulation_steps == 3
    again = type(optimizer).from_config(optimizer.get_config())  # as a saved model.keras restores it
    assert again.use_ema and again.ema_momentum == 0.9 and again.gradient_accumulation_steps == 3


class _WeightsEachBatch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seen = [np.concatenate([w.ravel() for w in self.model.get_weights()])]

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(np.concatenate([w.ravel() for w in self.model.get_weights()]))


@pytest.mark.parametrize("accumulate", [1, 3])
def test_accumulated_gradients_change_the_weights_only_every_n_batches(accumulate):
    model = _compiled(_recipe(**{"optimizer.accumulate": accumulate, "optimizer.name": "sgd", "optimizer.lr": 0.1}))
    x, y = np.tile(X, (3, 1)), np.tile(Y, 3)  # 12 examples: 6 batches of 2
    spy = _WeightsEachBatch()
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[spy])
    changed = [not np.array_equal(a, b) for a, b in zip(spy.seen, spy.seen[1:])]
    assert changed == [(step + 1) % accumulate == 0 for step in range(6)]
    assert int(model.optimizer.iterations) == 6 // accumulate  # optimizer updates, not batches


def test_accumulating_n_batches_applies_their_mean_gradient():
    """SGD over 2 batches of 2 with accumulate=2 takes the step one batch of 4 takes."""
    one = _compiled(_recipe(**{"optimizer.accumulate": 2, "optimizer.name": "sgd", "optimizer.lr": 0.1}))
    one.fit(X, Y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    big = _compiled(_recipe(**{"optimizer.name": "sgd", "optimizer.lr": 0.1}))
    big.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(one.get_weights(), big.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def digits_session():
    return Session(_recipe())


class _Record(keras.callbacks.Callback):
    """Records each epoch's raw weights and averaged weights; optionally rewrites val_accuracy."""

    def __init__(self, scripted=None):
        super().__init__()
        self.scripted = scripted
        self.raw, self.averaged = [], []

    def on_epoch_end(self, epoch, logs=None):
        if self.scripted:
            logs["val_accuracy"] = self.scripted[epoch]  # later callbacks read the logs as changed
        self.raw.append(self.model.get_weights())
        self.averaged.append(averaged_weights(self.model))


def test_ema_validates_with_and_ends_with_the_averaged_weights(digits_session):
    recipe = _recipe(epochs=1, **{"optimizer.ema": 0.5, "optimizer.lr": 0.05})
    session = Session(recipe, setup=digits_session.setup)
    model = session.build()
    spy = _Record()
    result = fit_plan(model, recipe, session.data, session.setup, None, extra=[spy], verbose=0)
    optimizer = model.optimizer
    for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(average))  # the model holds the averages
    last_raw = spy.raw[-1]
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), last_raw))
    for a, b in zip(model.get_weights(), spy.averaged[-1]):
        np.testing.assert_array_equal(a, b)
    # The last epoch's validation read the weights the model now holds, not the raw ones.
    val = model.evaluate(session.data.val, verbose=0, return_dict=True)
    assert val["loss"] == pytest.approx(result.rows[-1]["val_loss"], rel=1e-5)
    model.set_weights(last_raw)
    assert model.evaluate(session.data.val, verbose=0, return_dict=True)["loss"] != pytest.approx(
        result.rows[-1]["val_loss"], rel=1e-5)


# -- checkpoint = "best" -----------------------------------------------------------------------

def test_checkpoint_best_ends_with_the_best_epochs_averaged_weights(digits_session, tmp_path):
    recipe = _recipe(epochs=2, checkpoint="best", **{"optimizer.ema": 0.5})
    session = Session(recipe, setup=digits_session.setup)
    model = session.build()
    spy = _Record(scripted=[0.9, 0.5])  # epoch 1 is the best: not the last
    result = fit_plan(model, recipe, session.data, session.setup, str(tmp_path / "backup"), lambda: [spy],
                      verbose=0)
    assert result.best_epoch == 1
    for a, b in zip(model.get_weights(), spy.averaged[0]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(spy.averaged[0], spy.averaged[1]))


# -- metrics -----------------------------------------------------------------------------------

PROBS = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]], "float32")
LABELS = np.array([0, 1, 2, 2, 1])  # predicted 0, 2, 2, 0, 1: 3 right; label in top 2: all but example 1


def test_metrics_on_a_hand_made_batch_from_integer_and_soft_labels():
    # Per class F1: class 0 (TP 1, FP 1, FN 0) 2/3; class 1 (TP 1, FN 1) 2/3; class 2 (TP 1, FP 1, FN 1) 1/2.
    expected = {"accuracy": 3 / 5, "top2": 4 / 5, "macro_f1": (2 / 3 + 2 / 3 + 1 / 2) / 3}
    soft = np.eye(3, dtype="float32")[LABELS] * 0.6 + 0.4 / 3  # argmax: the label
    for labels in (LABELS, LABELS[:, None], soft):
        for metric in (Accuracy(), TopKAccuracy(2), MacroF1()):
            metric.update_state(labels, PROBS)
            assert float(metric.result()) == pytest.approx(expected[metric.name], abs=1e-5), metric.name
        values = metric_values(list(expected), metric_stats(labels, PROBS, list(expected)))
        assert values == pytest.approx(expected)


def test_tune_objective_on_an_extra_metric_is_maximized_and_needs_the_metric(monkeypatch, tmp_path):
    from kzoo.tuning import search as search_module

    seen = {}
    monkeypatch.setattr(search_module, "_search", lambda *args: seen.setdefault("objective", args[3]))
    with pytest.raises(RecipeError, match=r"objective val_macro_f1 is logged only with macro_f1"):
        search_module.search(_recipe(), objective="val_macro_f1", out=str(tmp_path / "a"))
    recipe = _recipe(metrics=["top5", "macro_f1"])
    search_module.search(recipe, objective="val_macro_f1", out=str(tmp_path / "b"))
    assert seen["objective"] == "val_macro_f1"
    assert search_module._infer_direction("val_macro_f1") == search_module._infer_direction("val_top5") == "max"


# -- a whole run -------------------------------------------------------------------------------

@pytest.mark.slow  # a whole run and kzoo eval: over the default suite's budget
def test_run_with_ema_best_checkpoint_and_metrics_is_what_its_files_say(tmp_path, cli):
    from kzoo.evaluate import predict_split, test_data
    from kzoo.safe_load import load_model

    out = tmp_path / "run"
    recipe = _recipe(epochs=3, checkpoint="best", metrics=["top5", "macro_f1"],
                     **{"optimizer.ema": 0.9, "loss.label_smoothing": 0.1})
    kzoo.recipes.run(recipe, out=str(out), verbose=0)
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("top5", "macro_f1", "val_top5", "val_macro_f1"):
        assert key in rows[0], key
    val_accuracy = [float(r["val_accuracy"]) for r in rows]
    assert metrics["checkpoint"] == "best" and metrics["best_epoch"] == 1 + int(np.argmax(val_accuracy))
    model = load_model(str(out / "model.keras"))  # compiled: the kzoo loss and metrics load too
    assert model.loss.label_smoothing == pytest.approx(0.1)
    splits = test_data(kzoo.recipes.load(str(out / "recipe.toml")))
    probs, labels = predict_split(model, splits, "val")
    assert float(np.mean(probs.argmax(1) == labels)) == pytest.approx(val_accuracy[metrics["best_epoch"] - 1],
                                                                      abs=1e-6)
    probs, labels = predict_split(model, splits, "test")
    names = ["accuracy", "top5", "macro_f1"]
    values = metric_values(names, metric_stats(labels, probs.astype("float32"), names))
    for name in names:
        assert metrics[f"test_{name}"] == pytest.approx(values[name], abs=1e-5), name
    code, _, err = cli("eval", out)
    assert code == 0, err
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert evaluated["test_macro_f1"] == pytest.approx(metrics["test_macro_f1"], abs=1e-5)
    assert not math.isnan(metrics["test_loss"])


# -- kill and resume ---------------------------------------------------------------------------

def _same_run(out, reference):
    """`out` ended as `reference`: metrics (the best epoch included), every history row, the weights."""
    from kzoo.safe_load import load_model

    metrics, expected = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    for key in ("test_accuracy", "test_loss", "test_macro_f1", "best_val_accuracy", "best_epoch", "epochs_run"):
        assert metrics[key] == expected[key], key
    assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()
    for a, b in zip(load_model(str(out / "model.keras")).weights, load_model(str(reference / "model.keras")).weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert not (out / "backup").exists()
    return metrics


LEVERS = ["--set", "optimizer.ema=0.9", "--set", 'checkpoint="best"', "--set", 'metrics=["macro_f1"]',
          "--set", "loss.label_smoothing=0.1", "--set", "jit_compile=false"]


@pytest.mark.slow  # two runs in subprocesses and a kill: over the default suite's budget
def test_sigkilled_run_with_ema_and_best_checkpoint_resumes_bit_identical(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def kzoo(out):
        return [sys.executable, "-m", "kzoo", "run", "mlp-digits", "--epochs", "6", *LEVERS, "--out", str(out),
                "--quiet"]

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(kzoo(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            names = os.listdir(killed / "backup") if (killed / "backup").is_dir() else []
            if any(n.startswith("epoch-") and n[6:].isdigit() for n in names):  # a complete checkpoint
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "metrics.json").exists()
    resumed = subprocess.run(kzoo(killed), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = subprocess.run(kzoo(tmp_path / "uninterrupted"), capture_output=True, text=True, env=env)
    assert reference.returncode == 0, reference.stderr[-2000:]
    metrics = _same_run(killed, tmp_path / "uninterrupted")
    assert 1 <= metrics["resumed_after_epoch"] < 6


STAGED_LEVERS = """
name = "staged-levers"
epochs = 4
jit_compile = false
checkpoint = "best"
metrics = ["macro_f1"]

[data]
dataset = "digits"

[model]
name = "mlp"
depth = 2
width = 16

[optimizer]
name = "adam"
ema = 0.9

[finetune]
stages = "head:2@1e-2, all:2@3e-3"
"""


class Stopped(Exception):
    """Stands for a kill right after a checkpoint."""


@pytest.mark.slow  # two staged runs: over the default suite's budget
@pytest.mark.parametrize("stop_after", [1, 2])  # inside stage 1; at its end, where the averages go in
def test_staged_run_with_ema_and_best_checkpoint_stopped_and_resumed_is_bit_identical(tmp_path, monkeypatch,
                                                                                       stop_after):
    from kzoo.runs import EpochBackup, latest_snapshot

    (tmp_path / "staged.toml").write_text(STAGED_LEVERS)
    recipe = kzoo.recipes.load(str(tmp_path / "staged.toml"))
    kzoo.recipes.run(recipe, out=str(tmp_path / "uninterrupted"), verbose=0)
    out = tmp_path / "stopped"
    on_epoch_end = EpochBackup.on_epoch_end

    def checkpoint_then_stop(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if epoch + 1 == stop_after:
            raise Stopped()

    with monkeypatch.context() as m:
        m.setattr(EpochBackup, "on_epoch_end", checkpoint_then_stop)
        with pytest.raises(Stopped):
            kzoo.recipes.run(recipe, out=str(out), verbose=0)
    assert latest_snapshot(str(out / "backup")).epoch == stop_after
    kzoo.recipes.run(recipe, out=str(out), verbose=0)
    assert _same_run(out, tmp_path / "uninterrupted")["resumed_after_epoch"] == stop_after
