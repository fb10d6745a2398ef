"""Stochastic depth: drop a whole residual branch per example during training."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class StochasticDepth(keras.layers.Layer):
    """Adds a residual branch to its shortcut, dropping the branch for each example with
    probability `rate` during training: `shortcut + mask * branch / (1 - rate)`, with the mask
    drawn per example. At inference it is `shortcut + branch` (the inverted-dropout scaling
    keeps the expectation equal, as Keras's Dropout does).

    Called on a list `[shortcut, branch]` of tensors of the same shape.

    Args:
        rate: probability of dropping the branch, in [0, 1). Defaults to `0.1`.
        seed: seed of the drop draws. Defaults to `None`.

    Example:
        >>> y = StochasticDepth(0.2, name="stage1_block0_add")([shortcut, branch])

    Reference:
        Huang et al. 2016, "Deep Networks with Stochastic Depth",
        https://arxiv.org/abs/1603.09382
    """

    def __init__(self, rate=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1). Received: rate={rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not isinstance(input_shape[0], (list, tuple)):
            raise ValueError(f"StochasticDepth takes a list [shortcut, branch]. Received: input_shape={input_shape}")

    def call(self, inputs, training=False):
        shortcut, branch = inputs
        if training and self.rate > 0:
            keep = 1.0 - self.rate
            mask_shape = (ops.shape(branch)[0],) + (1,) * (len(branch.shape) - 1)
            mask = keras.random.uniform(mask_shape, dtype=branch.dtype, seed=self.seed_generator) < keep
            branch = branch * ops.cast(mask, branch.dtype) / ops.cast(keep, branch.dtype)
        return shortcut + branch

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
