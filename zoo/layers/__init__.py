"""Custom Keras layers of kzoo, each registered with `register_keras_serializable(package="kzoo")`."""

from kzoo.zoo.layers.pca_whitening import PCAWhitening
from kzoo.zoo.layers.scalar_bias import ScalarBias  # noqa: F401  (Fixup, issue #10)
from kzoo.zoo.layers.scalar_multiplier import ScalarMultiplier  # noqa: F401  (Fixup, issue #10)

__all__ = ["PCAWhitening"]
