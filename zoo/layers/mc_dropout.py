"""Monte-Carlo dropout: dropout that stays on at inference, for predictive uncertainty."""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="kzoo")
class MCDropout(keras.layers.Dropout):
    """Inverted dropout that is active in training and at inference, so repeated predictions
    on one input are samples from an approximate posterior predictive (Gal & Ghahramani).

    Use `mc_predict(model, x, samples)` for the mean prediction and its spread.

    Args:
        rate: fraction of the inputs to drop, in [0, 1). Defaults to `0.5`.
        noise_shape, seed: as for `keras.layers.Dropout`.

    Example:
        >>> x = MCDropout(0.2)(x)
        >>> mean, std = mc_predict(model, x_test, samples=30)

    Reference:
        Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation: Representing Model
        Uncertainty in Deep Learning", https://arxiv.org/abs/1506.02142
    """

    def __init__(self, rate=0.5, noise_shape=None, seed=None, **kwargs):
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1). Received: rate={rate}")
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        return super().call(inputs, training=True)


def mc_predict(model, x, samples: int = 20, batch_size: int = 256):
    """Mean and standard deviation of `samples` stochastic predictions of a model whose
    dropout layers are `MCDropout`.

    Args:
        model: a Keras model containing `MCDropout` layers.
        x: inputs (numpy array).
        samples: number of forward passes. Defaults to `20`.
        batch_size: prediction batch size. Defaults to `256`.

    Returns:
        `(mean, std)`, numpy arrays of the model's output shape.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1. Received: samples={samples}")
    preds = np.stack([np.asarray(model.predict(x, batch_size=batch_size, verbose=0)) for _ in range(samples)])
    return preds.mean(axis=0), preds.std(axis=0)
