"""gradient_check finds wrong gradients and passes right ones."""

import keras
import numpy as np
import tensorflow as tf

from kzoo.testing import gradient_check
from kzoo.zoo.layers import RReLU


@keras.saving.register_keras_serializable(package="kzoo_test")
class WrongGradSquare(keras.layers.Layer):
    """x**2 with a deliberately wrong gradient (x instead of 2x)."""

    def call(self, x):
        @tf.custom_gradient
        def square(v):
            return v * v, lambda dy: dy * v

        return square(x)


def test_a_wrong_gradient_is_caught():
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert gradient_check(WrongGradSquare(), x) > 0.4  # analytic x vs numeric 2x: error 1/2
    assert gradient_check(keras.layers.Activation("softplus"), x) < 1e-6


def test_weights_and_training_mode_are_checked():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    worst, errors = gradient_check(layer, np.random.default_rng(1).standard_normal((2, 4)), return_all=True)
    assert set(errors) == {"input0", f"{layer.name}/kernel", f"{layer.name}/bias"}
    assert worst < 1e-6
    # RReLU draws fresh leaks per call in training; the check replays the same draw each time.
    assert gradient_check(RReLU(seed=0), np.random.default_rng(2).standard_normal((3, 5)), training=True) < 1e-6
