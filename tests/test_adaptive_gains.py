"""Per-weight adaptive gains: the sign rule, the ill-conditioned quadratic, a recipe run."""

import numpy as np
import pytest

from kzoo.testing import steps_to_converge


def test_gain_rule_additive_increase_multiplicative_decrease_and_clipping():
    import keras

    from kzoo.optimizers import AdaptiveGainSGD

    opt = AdaptiveGainSGD(learning_rate=0.1, gain_increase=0.05, gain_decrease=0.5, min_gain=0.3,
                          max_gain=1.1)
    w = keras.Variable(np.zeros(3, "float32"))
    # Weight 0 keeps its sign, weight 1 flips every step, weight 2 has no gradient.
    grads = [[1.0, 1.0, 0.0], [2.0, -1.0, 0.0], [1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]
    expected_gains = [[1.0, 1.0, 1.0], [1.05, 0.5, 1.0], [1.1, 0.3, 1.0], [1.1, 0.3, 1.0]]
    expected_w = np.zeros(3)
    for g, gains in zip(grads, expected_gains):
        opt.apply([keras.ops.convert_to_tensor(np.array(g, "float32"))], [w])
        expected_w -= 0.1 * np.array(gains) * np.array(g)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(opt.gains[0]), gains, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), expected_w, rtol=1e-6)


@pytest.mark.parametrize("lr", [0.003, 0.01])
def test_gains_beat_sgd_momentum_on_an_ill_conditioned_quadratic(lr):
    import keras

    from kzoo.optimizers import AdaptiveGainSGD

    sgd = steps_to_converge(keras.optimizers.SGD(lr, momentum=0.9))
    gains = steps_to_converge(AdaptiveGainSGD(lr, momentum=0.9))
    assert sgd < 3000, "SGD with momentum should converge at this rate"
    assert gains < 0.8 * sgd, f"gains took {gains} steps, SGD with momentum {sgd}"


def test_serialization_round_trip_and_validation():
    import keras

    from kzoo.optimizers import AdaptiveGainSGD

    opt = AdaptiveGainSGD(0.02, momentum=0.5, gain_increase=0.1, gain_decrease=0.8, max_gain=5.0,
                          averaging=0.7, clipnorm=1.0)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, AdaptiveGainSGD)
    assert clone.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="gain_decrease=1.5"):
        AdaptiveGainSGD(gain_decrease=1.5)
    with pytest.raises(ValueError, match="max_gain=0.5"):
        AdaptiveGainSGD(max_gain=0.5)


def test_mlp_digits_trains_with_the_gains_optimizer(tmp_path):
    import keras

    import kzoo
    from kzoo.optimizers import AdaptiveGainSGD

    recipe = kzoo.recipes.load("mlp-digits", ["optimizer.name=gains", "optimizer.lr=0.01",
                                              "optimizer.momentum=0.9", "epochs=3"])
    result = kzoo.recipes.run(recipe, out=str(tmp_path / "r"), verbose=0)
    assert isinstance(result.model.optimizer, AdaptiveGainSGD)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.metrics["test_accuracy"] > 0.85
    reloaded = keras.models.load_model(tmp_path / "r" / "model.keras")
    assert isinstance(reloaded.optimizer, AdaptiveGainSGD)
    with pytest.raises(kzoo.RecipeError, match="min_gain=2"):
        kzoo.recipes.load("mlp-digits", ["optimizer.name=gains", "optimizer.min_gain=2.0"])
