"""kzoo.zoo: registered models and their building blocks (layers, activations, initializers)."""

from kzoo.zoo import (  # noqa: F401  # noqa: F401  (registers the models)
           activations,
           cnn,
           densenet,  # DenseNet / DenseNet-BC (issue #10)
           fixup,  # Fixup ResNets without normalization (issue #10)
           initializers,
           layers,  # noqa: F401  (registers the custom layers)
           mlp,
           norms,
)
from kzoo.zoo.registry import MODELS, create_model, list_models, model_defaults, register_model

__all__ = ["MODELS", "create_model", "list_models", "model_defaults", "register_model", "activations",
           "initializers", "norms"]
