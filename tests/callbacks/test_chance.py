"""The chance check: a run whose training loss stays at ln C says so, once, with the likely cause."""

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from kzoo.callbacks.chance import (
    ChanceCheck,
    at_chance,
    feature_spread,
    likely_cause,
    random_backbone_frozen_bn,
)

LN10 = math.log(10)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x[:640] / 16.0).astype("float32"), y[:640].astype("int64")  # 5 batches of 128: fast


def model_for(hidden_zero=False, seed=0):
    """A 64-32-10 MLP whose head starts at zero, so the first loss is exactly ln 10; with
    `hidden_zero` the hidden layer outputs 0 for every example (constant features)."""
    keras.utils.set_random_seed(seed)
    init = "zeros" if hidden_zero else "he_normal"
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, "relu", kernel_initializer=init, name="hidden"),
                             keras.layers.Dense(10, "softmax", kernel_initializer="zeros", name="head_dense")])


def fit(model, x, y, lr, callbacks, epochs=2, initial_epoch=0):
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    return model.fit(x, y, batch_size=128, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                     verbose=0, shuffle=False)


def warnings_in(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if "at chance" in line]


def test_a_learnable_dataset_raises_no_warning(digits, capsys):
    x, y = digits
    check = ChanceCheck(probe=(x[:256], y[:256]))
    history = fit(model_for(), x, y, 3e-2, [check])
    assert check.kzoo_metrics == {"at_chance": False}
    assert warnings_in(capsys) == []
    assert history.history["loss_over_chance"][-1] < 0.8  # the ratio it writes into the logs


def test_shuffled_labels_are_named_as_the_likely_cause(digits, capsys):
    x, y = digits
    shuffled = np.random.default_rng(0).permutation(y)
    check = ChanceCheck(probe=(x[:256], shuffled[:256]))
    history = fit(model_for(), x, shuffled, 1e-2, [check])
    assert all(abs(loss - LN10) < 0.02 * LN10 for loss in history.history["loss"])
    assert check.kzoo_metrics["at_chance"] is True
    assert check.kzoo_metrics["at_chance_cause"] == "labels_mismatch"
    assert check.kzoo_metrics["feature_spread"] > 1e-2
    (line,) = warnings_in(capsys)
    assert line == f"kzoo: warning: {check.diagnosis}"
    assert line.startswith("kzoo: warning: the run is at chance: training loss ") and "labels" in line


def test_a_tiny_learning_rate_is_named_before_the_labels(digits, capsys):
    """Also: a window longer than the run checks all of the run's epochs."""
    x, y = digits
    check = ChanceCheck(probe=(x[:256], y[:256]), epochs=5)
    fit(model_for(), x, y, 1e-9, [check])
    assert check.kzoo_metrics["at_chance_cause"] == "learning_rate_too_low"
    (line,) = warnings_in(capsys)
    assert "over epochs 1-2" in line and "learning rate 1.0e-09" in line


def test_constant_features_are_found_on_the_probe_batch(digits, capsys):
    x, y = digits
    model = model_for(hidden_zero=True)
    assert feature_spread(model, x[:256]) == 0.0
    assert feature_spread(model_for(), x[:256]) > 1e-2
    check = ChanceCheck(probe=(x[:256], y[:256]), random_frozen_bn=True)
    fit(model, x, y, 1e-2, [check])
    assert check.kzoo_metrics["at_chance_cause"] == "constant_features"
    (line,) = warnings_in(capsys)
    assert "nearly constant" in line and "frozen batch norm" in line


def test_the_causes_are_checked_in_order():
    frozen, low, varied, flat = True, 1e-9, 0.3, 1e-5
    assert likely_cause(flat, frozen, low)[0] == "constant_features"
    assert likely_cause(varied, frozen, low)[0] == "random_frozen_bn"
    assert likely_cause(varied, False, low)[0] == "learning_rate_too_low"
    assert likely_cause(varied, False, 1e-3)[0] == "labels_mismatch"
    assert likely_cause(None, False, 1e-3)[0] == "unknown"  # no probe batch: the features are not known


def test_one_instance_checks_the_runs_first_epochs_across_fits_and_warns_once(digits, capsys):
    """A staged run fits once per stage: a one-epoch stage then another; the check covers
    epochs 1-2 of the run and warns once; a later fit from epoch 0 is a new run."""
    x, y = digits
    model, check = model_for(), ChanceCheck(probe=(x[:256], y[:256]), run_epochs=3)
    fit(model, x, y, 1e-9, [check], epochs=1)
    assert check.kzoo_metrics == {} and warnings_in(capsys) == []  # one epoch of two seen
    model.fit(x, y, batch_size=128, initial_epoch=1, epochs=3, callbacks=[check], verbose=0, shuffle=False)
    assert check.kzoo_metrics["at_chance"] is True and len(check.losses) == 3
    assert len(warnings_in(capsys)) == 1
    model.fit(x, y, batch_size=128, epochs=2, callbacks=[check], verbose=0, shuffle=False)
    assert len(check.losses) == 2 and len(warnings_in(capsys)) == 1  # reset: checked and said again


def test_at_chance_band():
    assert at_chance([LN10 * 1.019, LN10 * 0.99], 10)
    assert not at_chance([LN10, LN10 * 0.97], 10)
    assert not at_chance([float("nan")], 10) and not at_chance([], 10) and not at_chance([0.0], 1)


@pytest.mark.parametrize("kwargs, message", [({"epochs": 0}, "Received: epochs=0"),
                                             ({"tolerance": 1.5}, "Received: tolerance=1.5")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChanceCheck(**kwargs)


# -- through the engine ------------------------------------------------------------------------

def _recipe(overrides):
    import kzoo.recipes

    base = {"epochs": 2, "model.depth": 1, "model.width": 16, "jit_compile": False, "schedule": {}}
    return kzoo.recipes.load("mlp-digits", {**base, **overrides})


def test_every_run_gets_the_check_and_a_recipe_can_turn_it_off():
    from kzoo.train.session import Session

    session = Session(_recipe({}))
    factory, _ = session.callbacks(None)
    first, second = factory(), factory()
    (check,) = [cb for cb in first if isinstance(cb, ChanceCheck)]
    assert [cb for cb in second if isinstance(cb, ChanceCheck)] == [check]  # one per run, across stages
    assert check.probe is not None and check.run_epochs == 2 and not check.random_frozen_bn
    off = Session(_recipe({"callbacks.chance_check": {"enabled": False}}))
    assert not any(isinstance(cb, ChanceCheck) for cb in off.callbacks(None)[0]())


@pytest.mark.parametrize("key, value", [("epochs", 0), ("tolerance", 0.0)])
def test_bad_recipe_settings_are_refused_when_the_recipe_loads(key, value):
    from kzoo.errors import RecipeError

    with pytest.raises(RecipeError, match=f"callbacks.chance_check.{key} .*Received: {key}={value}"):
        _recipe({f"callbacks.chance_check.{key}": value})


def test_random_backbone_with_frozen_bn_is_read_from_the_recipe():
    staged = {"finetune.stages": "head:1@1e-3, all:1@1e-3"}
    assert random_backbone_frozen_bn(_recipe(staged))
    assert not random_backbone_frozen_bn(_recipe({**staged, "finetune.train_bn": True}))
    assert not random_backbone_frozen_bn(_recipe({}))  # not staged: everything trains
