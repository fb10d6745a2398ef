"""kzoo.zoo: registered models and their building blocks (layers, activations, initializers)."""

from kzoo.zoo import (  # noqa: F401  # noqa: F401  (registers the models)
           activations,
           cnn,
           initializers,
           layers,  # noqa: F401  (registers the custom layers)
           mlp,
           norms,
)
from kzoo.zoo import densenet, fixup  # noqa: F401,E402  (registers DenseNets and Fixup ResNets; issue #10)
from kzoo.zoo.registry import MODELS, create_model, list_models, model_defaults, register_model

__all__ = ["MODELS", "create_model", "list_models", "model_defaults", "register_model", "activations",
           "initializers", "norms"]
