"""Single trainable scalars for Fixup: a bias added to, or a multiplier scaling, the whole input.

Reference:
    Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning Without
    Normalization" (https://arxiv.org/abs/1901.09321).
"""

from __future__ import annotations

import keras
from keras import ops


class _Scalar(keras.layers.Layer):
    """One learned scalar weight with a learning-rate multiplier (shared by the two layers below).

    The weight is stored as `value / sqrt(lr_multiplier)` and used times `sqrt(lr_multiplier)`,
    which scales its SGD step (with or without momentum) by `lr_multiplier`; adaptive optimizers
    (Adam) see their steps scaled by `sqrt(lr_multiplier)`.
    """

    weight_name = "value"

    def __init__(self, initial_value=0.0, lr_multiplier=1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(initial_value, (int, float)) or isinstance(initial_value, bool):
            raise ValueError(f"initial_value must be a number. Received: initial_value={initial_value!r}")
        if not isinstance(lr_multiplier, (int, float)) or isinstance(lr_multiplier, bool) or lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be a positive number. Received: lr_multiplier={lr_multiplier!r}")
        self.initial_value = float(initial_value)
        self.lr_multiplier = float(lr_multiplier)
        self._factor = self.lr_multiplier**0.5

    def build(self, input_shape):
        self.value = self.add_weight(name=self.weight_name, shape=(),
                                     initializer=keras.initializers.Constant(self.initial_value / self._factor))

    def scalar(self, dtype):
        return ops.cast(self.value * self._factor, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value,
                "lr_multiplier": self.lr_multiplier}


@keras.saving.register_keras_serializable(package="kzoo")
class ScalarBias(_Scalar):
    """Adds one learned scalar to the whole input: `y = x + b`.

    Fixup puts one before each convolution and activation of a residual branch, where a
    normalization layer would have supplied a per-channel shift.

    Args:
        initial_value: the starting value of `b`. Defaults to `0.0`.
        lr_multiplier: scales this scalar's learning rate under SGD; the Fixup models use `0.1`.
            Defaults to `1.0`.

    Example:
        >>> y = ScalarBias(name="block0_bias1a")(x)
    """

    weight_name = "bias"

    def call(self, inputs):
        return ops.add(inputs, self.scalar(inputs.dtype))


@keras.saving.register_keras_serializable(package="kzoo")
class ScalarMultiplier(_Scalar):
    """Multiplies the whole input by one learned scalar: `y = s * x`.

    Fixup ends each residual branch with one, where a normalization layer would have
    supplied a per-channel scale.

    Args:
        initial_value: the starting value of `s`. Defaults to `1.0`.
        lr_multiplier: as for `ScalarBias`. Defaults to `1.0`.

    Example:
        >>> y = ScalarMultiplier(name="block0_scale")(x)
    """

    weight_name = "scale"

    def __init__(self, initial_value=1.0, lr_multiplier=1.0, **kwargs):
        super().__init__(initial_value, lr_multiplier, **kwargs)

    def call(self, inputs):
        return ops.multiply(inputs, self.scalar(inputs.dtype))
