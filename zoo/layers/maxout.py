"""Maxout: the maximum over k linear pieces."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class Maxout(keras.layers.Layer):
    """Maxout activation: splits the feature axis into groups of `num_pieces` consecutive
    features and keeps the maximum of each group, so `C` features become `C / num_pieces`.

    Placed after a Dense or Conv layer with `units * num_pieces` outputs, it is the maxout unit
    h_i(x) = max_j (x W_ij + b_ij) of Goodfellow et al.: a learned, piecewise-linear convex
    activation. The zoo's `dense_unit` and `conv_unit` widen the linear layer for you when the
    activation is `maxout`, so a unit of `width` keeps `width` outputs.

    Args:
        num_pieces: linear pieces per output feature (k). Defaults to `2`.
        axis: the feature axis. Defaults to `-1`.

    Example:
        >>> x = keras.layers.Dense(64 * 3)(inputs)
        >>> h = Maxout(num_pieces=3)(x)  # 64 features

    Reference:
        Goodfellow et al. 2013, "Maxout Networks", https://arxiv.org/abs/1302.4389
    """

    def __init__(self, num_pieces=2, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_pieces, int) or isinstance(num_pieces, bool) or num_pieces < 1:
            raise ValueError(f"num_pieces must be a positive integer. Received: num_pieces={num_pieces}")
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(f"axis must be an integer. Received: axis={axis}")
        self.num_pieces = num_pieces
        self.axis = axis

    def build(self, input_shape):
        axis = self.axis % len(input_shape)
        channels = input_shape[axis]
        if axis == 0:
            raise ValueError(f"axis must not be the batch axis. Received: axis={self.axis}")
        if channels is not None and channels % self.num_pieces:
            raise ValueError(
                f"The feature axis ({channels}) must be divisible by num_pieces. "
                f"Received: num_pieces={self.num_pieces}"
            )
        self._axis = axis

    def call(self, inputs):
        shape = ops.shape(inputs)
        axis = self._axis
        # (..., C, ...) -> (..., C/k, k, ...) and the max over the new k axis.
        new_shape = tuple(shape[:axis]) + (-1, self.num_pieces) + tuple(shape[axis + 1:])
        return ops.max(ops.reshape(inputs, new_shape), axis=axis + 1)

    def compute_output_shape(self, input_shape):
        axis = self.axis % len(input_shape)
        out = list(input_shape)
        if out[axis] is not None:
            out[axis] //= self.num_pieces
        return tuple(out)

    def get_config(self):
        return {**super().get_config(), "num_pieces": self.num_pieces, "axis": self.axis}
