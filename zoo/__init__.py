"""kzoo.zoo: registered models and their building blocks (layers, activations, initializers)."""

from kzoo.zoo.registry import MODELS, create_model, list_models, model_defaults, register_model
from kzoo.zoo import layers  # noqa: F401  (registers the custom layers)
from kzoo.zoo import activations, initializers, norms  # noqa: F401
from kzoo.zoo import cnn, mlp  # noqa: F401  (registers the models)
from kzoo.zoo import resnet  # noqa: F401  (registers the ResNets)
from kzoo.zoo import backbones  # noqa: F401  (registers the keras.applications backbones)

__all__ = ["MODELS", "create_model", "list_models", "model_defaults", "register_model", "activations",
           "initializers", "norms"]
