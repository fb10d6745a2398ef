"""Which layers the training-dynamics monitors watch, found by walking nested models."""

from __future__ import annotations

import keras


def leaf_layers(model) -> list:
    """Every layer without sub-layers, in model order, nested models flattened."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) or getattr(layer, "layers", None):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


def weight_layers(model) -> list[tuple[str, list]]:
    """`(layer name, trainable variables)` for each layer holding a weight matrix or kernel.

    The lectures' update-to-weight rule is about weight matrices, so layers whose trainable
    variables are all vectors (batch-norm scales and offsets, PReLU slopes) are left out; a
    kept layer's bias counts with its kernel.
    """
    out = []
    for layer in leaf_layers(model):
        variables = list(layer.trainable_variables)
        if any(len(v.shape) >= 2 for v in variables):
            out.append((layer.name, variables))
    return out


def activation_kind(layer) -> str | None:
    """The activation a layer applies as its output (`"relu"`, `"tanh"`, ...), or None."""
    names = {keras.layers.ReLU: "relu", keras.layers.LeakyReLU: "leaky_relu", keras.layers.ELU: "elu",
             keras.layers.PReLU: "prelu", keras.layers.Softmax: "softmax"}
    for cls, name in names.items():
        if isinstance(layer, cls):
            return name
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None) if callable(fn) else None
    if name in (None, "linear"):
        return None
    return name


def activation_layers(model) -> list:
    """Layers whose output is an activation (Activation layers, or Dense/Conv with one built in),
    excluding the final softmax of the classifier."""
    return [layer for layer in leaf_layers(model) if activation_kind(layer) not in (None, "softmax")]
