"""PCA whitening of flattened inputs, fitted on the training split."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class PCAWhitening(keras.layers.Layer):
    """Flattens each example, subtracts the training mean and projects onto the principal
    axes scaled by 1/sqrt(eigenvalue + epsilon), so features are decorrelated with unit variance.

    The lectures' preprocessing for MLP inputs; the fitted statistics are non-trainable weights,
    so a saved model carries them.

    Args:
        epsilon: added to each eigenvalue before the square root. Defaults to `1e-2`.
        components: number of principal axes kept; `None` keeps all. Defaults to `None`.

    Example:
        >>> layer = PCAWhitening()
        >>> layer.adapt(x_train)
    """

    def __init__(self, epsilon=1e-2, components=None, **kwargs):
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive. Received: epsilon={epsilon}")
        if components is not None and components < 1:
            raise ValueError(f"components must be positive or None. Received: components={components}")
        self.epsilon = epsilon
        self.components = components

    def build(self, input_shape):
        features = int(np.prod(input_shape[1:]))
        k = self.components or features
        self.mean = self.add_weight(name="mean", shape=(features,), initializer="zeros", trainable=False)
        self.projection = self.add_weight(
            name="projection", shape=(features, k), initializer="identity" if k == features else "zeros",
            trainable=False,
        )
        self._features = features

    def adapt(self, x):
        """Fits the mean and the whitening projection on training inputs (numpy array)."""
        x = np.asarray(x, dtype="float64").reshape(len(x), -1)
        if not self.built:
            self.build((None,) + tuple(np.shape(x)[1:]))
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        eigvals, eigvecs = np.linalg.eigh(cov)
        order = np.argsort(eigvals)[::-1][: self.components or len(eigvals)]
        projection = eigvecs[:, order] / np.sqrt(eigvals[order] + self.epsilon)
        self.mean.assign(mean.astype("float32"))
        self.projection.assign(projection.astype("float32"))

    def call(self, inputs):
        x = ops.reshape(inputs, (-1, self._features))
        x = ops.cast(x, self.compute_dtype)
        return ops.matmul(x - ops.cast(self.mean, x.dtype), ops.cast(self.projection, x.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.components or int(np.prod(input_shape[1:])))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "components": self.components}
