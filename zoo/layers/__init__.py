"""Custom Keras layers of kzoo, each registered with `register_keras_serializable(package="kzoo")`."""

from kzoo.zoo.layers.pca_whitening import PCAWhitening

__all__ = ["PCAWhitening"]
