"""A single trainable scalar multiplying the whole input (Fixup's scalar multiplier)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class ScalarMultiplier(keras.layers.Layer):
    """Multiplies the whole input by one learned scalar: `y = s * x`.

    Fixup ends each residual branch with one, where a normalization layer would have
    supplied a per-channel scale.

    Args:
        initial_value: the starting value of `s`. Defaults to `1.0`.
        lr_multiplier: scales the learning rate of this scalar under SGD (with or without
            momentum) by storing it as `sqrt(lr_multiplier) * w`; the Fixup models use `0.1`.
            Adaptive optimizers (Adam) scale its steps by `sqrt(lr_multiplier)`. Defaults to `1.0`.

    Example:
        >>> y = ScalarMultiplier(name="block0_scale")(x)

    Reference:
        Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning Without
        Normalization" (https://arxiv.org/abs/1901.09321).
    """

    def __init__(self, initial_value=1.0, lr_multiplier=1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(initial_value, (int, float)) or isinstance(initial_value, bool):
            raise ValueError(f"initial_value must be a number. Received: initial_value={initial_value!r}")
        if not isinstance(lr_multiplier, (int, float)) or isinstance(lr_multiplier, bool) or lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be a positive number. Received: lr_multiplier={lr_multiplier!r}")
        self.initial_value = float(initial_value)
        self.lr_multiplier = float(lr_multiplier)
        self._factor = self.lr_multiplier**0.5

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(),
                                     initializer=keras.initializers.Constant(self.initial_value / self._factor))

    def call(self, inputs):
        return ops.multiply(inputs, ops.cast(self.scale * self._factor, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value,
                "lr_multiplier": self.lr_multiplier}
