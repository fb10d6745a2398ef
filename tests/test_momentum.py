"""Momentum warm-up: the compiled step really uses the scheduled value, and it is logged."""

import numpy as np
import pytest

LR = 0.1


def _fit_linear(optimizer, callback, epochs=3, steps=6):
    """A single weight with loss = w, so every gradient is exactly 1."""
    import keras

    model = keras.Sequential([keras.Input((1,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer, loss=lambda y, p: keras.ops.mean(p))
    x = np.ones((steps, 1), "float32")
    history = model.fit(x, x, batch_size=1, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[callback] if callback else [])
    return float(model.get_weights()[0][0, 0]), history.history, model


def test_sgd_step_reads_the_scheduled_momentum_and_logs_it():
    import keras

    from kzoo.callbacks.momentum import MomentumScheduler
    from kzoo.optimizers import composed_class

    values = [0.0, 0.5, 0.9]
    w, history, model = _fit_linear(keras.optimizers.SGD(LR, momentum=0.9),
                                     MomentumScheduler(lambda e: values[int(e)], per_step=False))
    expected, velocity = 0.0, 0.0
    for epoch in range(3):
        for _ in range(6):
            velocity = values[epoch] * velocity - LR
            expected += velocity
    assert history["momentum"] == pytest.approx(values)
    assert w == pytest.approx(expected, rel=1e-5)
    constant, _, _ = _fit_linear(keras.optimizers.SGD(LR, momentum=0.9), None)
    assert abs(constant - w) > 1.0  # a constant 0.9 goes much further: the schedule mattered
    assert isinstance(model.optimizer, composed_class(keras.optimizers.SGD))
    assert model.optimizer.get_config()["momentum"] == pytest.approx(0.9)


def test_adam_beta_1_follows_a_per_step_schedule():
    import keras

    from kzoo.callbacks.momentum import MomentumScheduler

    def schedule(epoch):
        return 0.5 + 0.4 * epoch / 3

    w, history, _ = _fit_linear(keras.optimizers.Adam(LR),
                                MomentumScheduler(schedule, steps_per_epoch=6, per_step=True))
    m = v = expected = 0.0
    for t in range(1, 19):
        beta_1 = schedule((t - 1) / 6)
        m += (1.0 - m) * (1 - beta_1)
        v += (1.0 - v) * (1 - 0.999)
        expected -= LR * np.sqrt(1 - 0.999**t) / (1 - beta_1**t) * m / (np.sqrt(v) + 1e-7)
    assert w == pytest.approx(expected, rel=1e-4)
    # Logged: the value of each epoch's last step.
    assert history["momentum"] == pytest.approx([schedule(e + 5 / 6) for e in range(3)])


@pytest.mark.parametrize("shape", ["linear", "cosine", "horizon"])
def test_warmup_shapes_rise_monotonically_from_start_to_end(shape):
    from kzoo.callbacks.momentum import momentum_warmup_value

    values = [momentum_warmup_value(p, 0.5, 0.99, shape) for p in np.linspace(-0.5, 1.5, 41)]
    assert values[0] == pytest.approx(0.5) and values[-1] == pytest.approx(0.99)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert momentum_warmup_value(0.5, 0.5, 0.9, "linear") == pytest.approx(0.7)


def test_momentum_warmup_recipe_logs_the_schedule(tmp_path, cli):
    import keras

    import kzoo
    from kzoo.callbacks.momentum import momentum_warmup_value

    recipe = kzoo.recipes.load("mlp-digits", [
        "epochs=3", "optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9",
        "callbacks.momentum_warmup.warmup_epochs=2.0",
        "callbacks.momentum_warmup.per_step=false"])
    result = kzoo.recipes.run(recipe, out=str(tmp_path / "r"), verbose=0)
    logged = [row["momentum"] for row in result.history]
    assert logged == pytest.approx([momentum_warmup_value(e / 2, 0.5, 0.9) for e in range(3)])
    assert result.metrics["test_accuracy"] > 0.8
    reloaded = keras.models.load_model(tmp_path / "r" / "model.keras")
    assert reloaded.optimizer.momentum == pytest.approx(0.9)
    code, out, _ = cli("list", "callbacks")
    assert code == 0 and "momentum_warmup" in out


def test_momentum_warmup_rejects_bad_values():
    import kzoo
    from kzoo.callbacks.momentum import MomentumScheduler, scheduled_optimizer

    recipe = kzoo.recipes.load("mlp-digits", ["callbacks.momentum_warmup.end=1.5"])
    from kzoo.callbacks import RunContext, build_callbacks

    with pytest.raises(kzoo.RecipeError, match="end=1.5"):
        build_callbacks(recipe.callbacks, RunContext(recipe=recipe))
    import keras

    with pytest.raises(ValueError, match="optimizer=Adagrad"):
        scheduled_optimizer(keras.optimizers.Adagrad())
    with pytest.raises(ValueError, match="schedule=0.9"):
        MomentumScheduler(0.9)
