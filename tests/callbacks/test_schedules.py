"""Schedules by name: saved with the optimizer, scaled by plateau callbacks, logged as used."""

import numpy as np
import pytest

SPECS = {
    "constant": {},
    "piecewise": {"boundaries": [1, 2], "factor": 0.1},
    "exponential": {"decay_rate": 0.5, "decay_epochs": 1.0},
    "inverse_time": {"decay_rate": 0.5},
    "polynomial": {"end_factor": 0.01, "power": 2.0},
    "cosine": {"warmup_epochs": 0.0},
    "cosine_restarts": {"first_epochs": 1.0},
    "warmup_cosine": {"warmup_epochs": 1.0},
    "one_cycle": {},
}
STEPS_PER_EPOCH, EPOCHS = 10, 4


def _model(optimizer):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(2, activation="softmax", name="out")])
    model.compile(optimizer, "sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.RandomState(0)
    return rng.randn(40, 3).astype("float32"), rng.randint(0, 2, 40)


def test_every_registered_schedule_is_covered():
    from kzoo.callbacks.schedules import list_schedules

    assert sorted(SPECS) == list_schedules()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_schedule_survives_keras_save_and_load(name, tmp_path):
    import keras

    from kzoo.callbacks.schedules import build_schedule

    lr = build_schedule({"name": name, **SPECS[name]}, 0.1, STEPS_PER_EPOCH, EPOCHS)
    model = _model(keras.optimizers.SGD(lr))
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # 10 steps: the optimizer is built and has moved
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    a, b = model.optimizer, loaded.optimizer
    assert int(b.iterations) == int(a.iterations) == 10
    assert float(b.learning_rate) == pytest.approx(float(a.learning_rate), rel=1e-6)
    if name != "constant":
        for step in (0, 3, 10, 17, 25, 39):
            assert float(b._learning_rate(step)) == pytest.approx(float(a._learning_rate(step)), rel=1e-6, abs=1e-12)
        assert type(b._learning_rate.schedule) is type(a._learning_rate.schedule)


def test_recipe_boundaries_are_epochs_converted_to_steps():
    from kzoo.callbacks.schedules import build_schedule

    s = build_schedule({"name": "piecewise", "boundaries": [2], "factor": 0.5}, 0.2, 10, 4)
    assert float(s(19)) == pytest.approx(0.2)
    assert float(s(21)) == pytest.approx(0.1)


def test_one_cycle_rate_rises_then_falls_and_momentum_moves_the_other_way():
    from kzoo.callbacks.schedules import OneCycle

    s = OneCycle(1.0, 100, pct_start=0.25, div_factor=25.0, final_div_factor=1e4)
    lrs = [float(s(t)) for t in range(101)]
    moms = [float(s.momentum(t)) for t in range(101)]
    peak = int(np.argmax(lrs))
    assert peak == 25 and lrs[0] == pytest.approx(0.04) and lrs[-1] == pytest.approx(0.04 / 1e4, rel=1e-3)
    assert all(np.diff(lrs[:26]) > 0) and all(np.diff(lrs[25:]) <= 0)
    assert int(np.argmin(moms)) == 25 and moms[0] == pytest.approx(0.95) and moms[-1] == pytest.approx(0.95)


def _one_cycle_fit(beta_1_setter, run_eagerly=False):
    """Three epochs of a small Dense model under Adam with a one-cycle rate; returns its weights."""
    import keras

    from kzoo.callbacks.schedules import OneCycle

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 5)).astype("float32"), rng.integers(0, 3, 48)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    schedule = OneCycle(0.05, 18, pct_start=0.3)
    optimizer = keras.optimizers.Adam(schedule)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=run_eagerly)
    callbacks = [beta_1_setter(schedule, optimizer)] if beta_1_setter else []
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
    return model.get_weights()


def test_one_cycle_momentum_is_the_beta_1_the_compiled_step_uses():
    import keras

    from kzoo.callbacks import ScheduleMomentum

    class EagerBeta1(keras.callbacks.Callback):
        """The reference: eager Adam reads its float beta_1 at every step, so set it by hand."""

        def __init__(self, schedule, optimizer):
            super().__init__()
            self.schedule, self.optimizer = schedule, optimizer

        def on_train_batch_begin(self, batch, logs=None):
            self.optimizer.beta_1 = float(self.schedule.momentum(int(self.optimizer.iterations)))

    cycled = _one_cycle_fit(lambda schedule, optimizer: ScheduleMomentum())
    reference = _one_cycle_fit(EagerBeta1, run_eagerly=True)
    constant = _one_cycle_fit(None)  # Adam's own beta_1 = 0.9 throughout
    for a, b in zip(cycled, reference):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert max(np.abs(a - c).max() for a, c in zip(cycled, constant)) > 1e-3  # the cycle changes the updates


def test_one_cycle_recipe_cycles_adams_beta_1_and_still_saves(tmp_path):
    import keras

    from kzoo.recipes import load, run

    sets = ["epochs=3", "model.depth=1", "model.width=16"]
    recipe = load("mlp-digits", sets + ["schedule={name='one_cycle'}"])
    result = run(recipe, out=str(tmp_path / "r"), verbose=0)
    momentum = [row["momentum"] for row in result.history]
    lrs = [row["learning_rate"] for row in result.history]
    assert momentum[-1] > momentum[0] and lrs[-1] < lrs[0]  # past the peak: rate falls, momentum rises
    # The same run with the momentum held at 0.95 (the rate cycles alike) trains differently:
    # the recipe path hands the cycled beta_1 to the optimizer, not only to the log.
    held = run(load("mlp-digits", sets + ["schedule={name='one_cycle', min_momentum=0.95}"]),
               out=str(tmp_path / "held"), verbose=0)
    assert [row["momentum"] for row in held.history] == pytest.approx([0.95] * 3)
    assert [row["learning_rate"] for row in held.history] == pytest.approx(lrs)
    assert any(not np.array_equal(a, b) for a, b in zip(result.model.get_weights(), held.model.get_weights()))
    loaded = keras.models.load_model(str(tmp_path / "r" / "model.keras"))
    assert isinstance(loaded.optimizer.beta_1, float)


def test_schedule_errors_name_the_bad_value():
    from kzoo.callbacks.schedules import build_schedule
    from kzoo.errors import RecipeError

    with pytest.raises(RecipeError, match=r"Received: t_mul=0.5$"):
        build_schedule({"name": "cosine_restarts", "t_mul": 0.5}, 0.1, 10, 4)
    with pytest.raises(RecipeError, match=r"Received: pct_start=1.5$"):
        build_schedule({"name": "one_cycle", "pct_start": 1.5}, 0.1, 10, 4)


def test_plateau_reduces_a_schedule_and_logs_the_rate_used():
    import keras

    from kzoo.callbacks import LearningRateLogger, ReduceLROnPlateau
    from kzoo.callbacks.schedules import build_schedule

    lr = build_schedule({"name": "exponential", "decay_rate": 0.5, "decay_epochs": 1.0}, 0.1, 5, 6)
    model = _model(keras.optimizers.SGD(lr))
    x, y = _data()
    # min_delta huge: no epoch counts as an improvement, so every epoch after the first reduces
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=4, callbacks=[LearningRateLogger(), plateau], verbose=0)
    logged = history.history["learning_rate"]
    assert len(plateau.reductions) == 3
    assert lr.multiplier.numpy() == pytest.approx(0.125)
    # epoch e (0-based) ends with step 5(e+1)-1; the reductions at the ends of epochs 1, 2, 3
    # apply from the next epoch on
    expected = [0.1 * 0.5 ** ((5 * (e + 1) - 1) / 5) * 0.5 ** max(0, e - 1) for e in range(4)]
    np.testing.assert_allclose(logged, expected, rtol=1e-5)


def test_rate_helpers_see_through_mixed_precisions_loss_scale_optimizer():
    """Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer; plateau and adaptive
    callbacks must still scale the schedule it holds."""
    import keras

    from kzoo.callbacks.lr_control import learning_rate_at, lr_multiplier, scale_learning_rate
    from kzoo.callbacks.schedules import ScaledSchedule

    schedule = ScaledSchedule(keras.optimizers.schedules.CosineDecay(0.1, 100))
    wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(schedule))
    assert learning_rate_at(wrapped, 0) == pytest.approx(0.1)
    before, after = scale_learning_rate(wrapped, 0.5)
    assert (before, after) == (pytest.approx(0.1), pytest.approx(0.05))
    assert lr_multiplier(wrapped) == pytest.approx(0.5)
    plain = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.2))
    scale_learning_rate(plain, 0.5)
    assert learning_rate_at(plain) == pytest.approx(0.1)
