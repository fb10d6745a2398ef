"""kzoo.zoo: registered models and their building blocks (layers, activations, initializers)."""

from kzoo.zoo import (  # noqa: F401  (importing registers the layers, blocks and models)
    activations,
    backbones,
    cnn,
    densenet,
    fixup,
    hub,
    initializers,
    layers,
    mlp,
    norms,
    resnet,
)
from kzoo.zoo.fold import fold_batchnorm
from kzoo.zoo.registry import MODELS, create_model, list_models, model_defaults, register_model

__all__ = ["MODELS", "create_model", "list_models", "model_defaults", "register_model", "activations",
           "initializers", "norms", "fold_batchnorm"]
