"""Randomized leaky ReLU (RReLU)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU: `x` for x >= 0 and `a * x` for x < 0, where in training the leak
    `a` is drawn from U(lower, upper) for every element of every batch, and at inference it is
    fixed to the mean leak (lower + upper) / 2.

    The random leak acts as a regularizer; Xu et al. found it beat ReLU, leaky ReLU and PReLU
    on small datasets (CIFAR-100 in their study).

    Args:
        lower: lower bound of the leak. Defaults to `1/8` (the paper's 1/upper with upper = 8).
        upper: upper bound of the leak. Defaults to `1/3` (the paper's 1/lower with lower = 3).
        seed: seed of the leak draws. Defaults to `None`.

    Example:
        >>> y = RReLU(lower=0.1, upper=0.3)(x, training=True)

    Reference:
        Xu et al. 2015, "Empirical Evaluation of Rectified Activations in Convolutional
        Network", https://arxiv.org/abs/1505.00853
    """

    def __init__(self, lower=1.0 / 8.0, upper=1.0 / 3.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= lower <= upper:
            raise ValueError(f"lower and upper must satisfy 0 <= lower <= upper. Received: lower={lower}, upper={upper}")
        self.lower = float(lower)
        self.upper = float(upper)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if training:
            leak = keras.random.uniform(ops.shape(inputs), minval=self.lower, maxval=self.upper,
                                        dtype=inputs.dtype, seed=self.seed_generator)
        else:
            leak = ops.cast((self.lower + self.upper) / 2.0, inputs.dtype)
        return ops.where(inputs >= 0, inputs, inputs * leak)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}
