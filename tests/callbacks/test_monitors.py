"""Update-ratio, gradient and activation monitors: measured values, flags, logs, adaptive mode."""

import warnings

import numpy as np
import pytest


def _data(n=32, d=5, classes=3, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(n, d).astype("float32"), rng.randint(0, classes, n)


def _classifier(lr, momentum=0.0):
    import keras

    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(3, activation="softmax", name="out")])
    model.compile(keras.optimizers.SGD(lr, momentum=momentum), "sparse_categorical_crossentropy")
    return model


def _layer_norms(tensors):
    return float(np.sqrt(sum(np.sum(np.asarray(t, np.float64) ** 2) for t in tensors)))


def test_update_ratio_equals_lr_times_grad_norm_over_weight_norm():
    import tensorflow as tf

    from kzoo.callbacks import UpdateRatioMonitor

    lr = 0.5
    model = _classifier(lr)
    x, y = _data()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    expected = {}
    for name in ("hidden", "out"):
        layer = model.get_layer(name)
        idx = [i for i, v in enumerate(model.trainable_variables) if any(v is w for w in layer.trainable_variables)]
        expected[name] = lr * _layer_norms([grads[i] for i in idx]) / _layer_norms(
            [model.trainable_variables[i] for i in idx])

    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                        callbacks=[UpdateRatioMonitor(every_n_steps=1)])
    for name, value in expected.items():
        assert history.history[f"update_ratio/{name}"][0] == pytest.approx(value, rel=1e-5)
    assert history.history["update_ratio/median"][0] == pytest.approx(np.median(list(expected.values())), rel=1e-5)


def test_update_ratio_samples_every_n_steps_and_warns_once_per_layer():
    from kzoo.callbacks import UpdateRatioMonitor

    model = _classifier(1e-7)  # far too small: every ratio is below 1e-4
    x, y = _data(n=80)
    monitor = UpdateRatioMonitor(every_n_steps=3, patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    assert [s["step"] for s in monitor.trace] == [0, 3, 6, 9, 12, 15, 18]
    messages = [str(w.message) for w in caught if "Update ratio" in str(w.message)]
    assert len(messages) == 2 and all("raise the learning rate" in m for m in messages)
    assert sorted(monitor.out_of_range) == ["hidden", "out"]


def test_adaptive_mode_raises_a_small_rate_toward_the_target_in_bounded_steps():
    from kzoo.callbacks import LearningRateLogger, UpdateRatioMonitor

    model = _classifier(1e-6)
    x, y = _data(n=64)
    monitor = UpdateRatioMonitor(every_n_steps=2, adaptive=True, target=1e-3, max_change=4.0, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0,
                        callbacks=[LearningRateLogger(), monitor])
    factors = [c["factor"] for c in monitor.lr_changes]
    assert factors and all(1 < f <= 4.0 for f in factors)
    lr_now = float(model.optimizer.learning_rate)
    assert lr_now == pytest.approx(1e-6 * np.prod(factors), rel=1e-5)
    assert lr_now > 100 * 1e-6
    assert history.history["learning_rate"][-1] == pytest.approx(lr_now, rel=1e-6)  # the rate in use
    last = monitor.trace[-1]["median"]
    assert 1e-3 / 3 < last < 1e-3 * 3


def _regression(names=("first", "middle", "last")):
    import keras

    model = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4, name=n) for n in names[:-1]]
                             + [keras.layers.Dense(1, name=names[-1])])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def test_gradient_monitor_matches_an_independent_gradient_and_flags_vanishing_layers():
    import tensorflow as tf

    from kzoo.callbacks import GradientMonitor

    model = _regression()
    middle = model.get_layer("middle")
    middle.set_weights([middle.get_weights()[0] * 1e-6, middle.get_weights()[1]])  # gradients to 'first' vanish
    x, y = _data(n=16, d=4)
    y = y.astype("float32")[:, None]
    monitor = GradientMonitor((x, y), every_n_steps=100)
    monitor.set_model(model)
    monitor.on_train_begin()
    norms = monitor.sample()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False))
    first = model.get_layer("first").trainable_variables
    expected = _layer_norms(tape.gradient(loss, first))
    assert norms["first"] == pytest.approx(expected, rel=1e-5)
    assert monitor.flags == {"first": "vanishing"}


def test_gradient_monitor_flags_exploding_layers_and_logs_per_layer():
    from kzoo.callbacks import GradientMonitor

    model = _regression()
    x, y = _data(n=16, d=4)
    x = x * 1e4  # huge inputs: huge gradients everywhere
    y = y.astype("float32")[:, None]
    monitor = GradientMonitor((x, y), every_n_steps=1, exploding=1e3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.flags.get("first") == "exploding"
    assert any("exploding in layer 'first'" in str(w.message) for w in caught)
    assert {"grad_norm/first", "grad_ratio/first", "grad_norm/last"} <= set(history.history)


def test_activation_monitor_counts_dead_relus_and_saturated_tanh_units():
    import keras

    from kzoo.callbacks import ActivationMonitor

    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation="relu", name="dead")(inputs)
    t = keras.layers.Dense(6, name="pre")(inputs)
    t = keras.layers.Activation("tanh", name="squashed")(t)
    out = keras.layers.Dense(3, activation="softmax", name="out")(keras.layers.Concatenate()([h, t]))
    model = keras.Model(inputs, out)
    dead = model.get_layer("dead")
    kernel, bias = dead.get_weights()
    bias[:4] = -1e3  # four of six units can never fire
    dead.set_weights([kernel, bias])
    pre = model.get_layer("pre")
    pre.set_weights([pre.get_weights()[0] * 1e3, pre.get_weights()[1]])
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    x, y = _data(n=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=1, verbose=0,
                            callbacks=[ActivationMonitor((x, y), every_n_steps=1)])
    assert history.history["dead_relu/dead"][0] == pytest.approx(4 / 6)
    assert history.history["saturated/squashed"][0] > 0.95
    assert "dead_relu/squashed" not in history.history and "saturated/dead" not in history.history
    assert any("67% of the units of layer 'dead'" in str(w.message) for w in caught)


def test_monitor_arguments_are_checked_early():
    from kzoo.callbacks import GradientMonitor, UpdateRatioMonitor

    with pytest.raises(ValueError, match=r"Received: every_n_steps=0$"):
        UpdateRatioMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match=r"Received: target=-1"):
        UpdateRatioMonitor(target=-1)
    with pytest.raises(ValueError, match=r"Received: probe=ndarray"):
        GradientMonitor(np.zeros((2, 2)))


def _trained_trace(steps_per_execution, monitor_factory, epochs=2):
    """Trains `_classifier` from fixed weights at `steps_per_execution`; returns the monitor."""
    import keras

    keras.utils.set_random_seed(0)
    model = _classifier(0.5)
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy",
                  steps_per_execution=steps_per_execution)
    x, y = _data(n=80)
    monitor = monitor_factory()
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[monitor])
    return model, monitor


def test_update_ratio_is_measured_inside_the_step_at_several_steps_per_call():
    from kzoo.callbacks import UpdateRatioMonitor

    # 10 steps, 5 per call, a sample every 3 steps: two samples fall in each call
    _, one = _trained_trace(1, lambda: UpdateRatioMonitor(every_n_steps=3), epochs=1)
    model, five = _trained_trace(5, lambda: UpdateRatioMonitor(every_n_steps=3), epochs=1)
    assert model.steps_per_execution == 5
    assert [s["step"] for s in five.trace] == [s["step"] for s in one.trace] == [0, 3, 6, 9]
    for a, b in zip(one.trace, five.trace):
        for name in ("hidden", "out"):
            assert b["ratios"][name] == pytest.approx(a["ratios"][name], rel=1e-5)
    assert five._step == 10


def test_probe_monitors_sample_at_the_end_of_the_call_that_ran_a_sampled_step():
    from kzoo.callbacks import ActivationMonitor, GradientMonitor

    x, y = _data(n=16)
    # 10 steps, 5 per call, every 4 steps: steps 0 and 4 run in the first call, 8 in the second
    _, grads = _trained_trace(5, lambda: GradientMonitor((x, y), every_n_steps=4), epochs=1)
    model, acts = _trained_trace(5, lambda: ActivationMonitor((x, y), every_n_steps=4), epochs=1)
    assert [s["step"] for s in grads.trace] == [s["step"] for s in acts.trace] == [4, 9]
    assert grads.sample()["hidden"] == pytest.approx(grads.trace[-1]["norms"]["hidden"], rel=1e-6)
    assert acts._step == grads._step == 10


def test_monitors_keep_several_steps_per_call_and_only_per_step_callbacks_get_one():
    from types import SimpleNamespace

    from kzoo.callbacks import ActivationMonitor, GradientMonitor, UpdateRatioMonitor
    from kzoo.errors import RecipeError
    from kzoo.train import resolve_steps_per_execution

    x, y = _data()
    monitors = [UpdateRatioMonitor(), GradientMonitor((x, y)), ActivationMonitor((x, y))]
    auto = SimpleNamespace(steps_per_execution=0)
    assert resolve_steps_per_execution(auto, 20, monitors) == 20
    adaptive = UpdateRatioMonitor(adaptive=True)  # it changes the rate right after a sampled step
    assert resolve_steps_per_execution(auto, 20, monitors + [adaptive]) == 1
    with pytest.raises(RecipeError, match=r"UpdateRatioMonitor acts after every step. Received: steps_per_execution=4$"):
        resolve_steps_per_execution(SimpleNamespace(steps_per_execution=4), 20, [adaptive])


def test_a_watched_stock_optimizer_saves_and_loads_without_the_monitors_variables(tmp_path):
    import keras

    from kzoo.callbacks import UpdateRatioMonitor

    model, monitor = _trained_trace(5, lambda: UpdateRatioMonitor(every_n_steps=3), epochs=1)
    assert type(model.optimizer).__name__ == "KzooSGD"  # turned into its kzoo class in place
    variables = len(model.optimizer.variables)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert len(loaded.optimizer.variables) == variables
    x, _ = _data(n=8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # a second fit reuses the traced step and goes on measuring
    model.fit(*_data(n=80), batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    assert [s["step"] for s in monitor.trace] == [0, 3, 6, 9]
