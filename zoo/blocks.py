"""Building blocks shared by the zoo's models, named so tooling can select layers."""

from __future__ import annotations

import keras

from kzoo.zoo import activations, initializers, norms


def weight_regularizer(l1: float = 0.0, l2: float = 0.0):
    """L1, L2 or elastic-net (both) weight penalty, or None."""
    if l1 and l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l1:
        return keras.regularizers.L1(l1)
    if l2:
        return keras.regularizers.L2(l2)
    return None


def model_inputs(input_shape, preprocessing=None):
    """The Input tensor and the tensor after the preprocessing layers."""
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for layer in preprocessing or []:
        x = layer(x)
    return inputs, x


def norm_act(x, name, activation="relu", normalization="batch", norm_position="before", bn_momentum=0.9):
    """Normalization then activation (`before`) or activation then normalization (`after`)."""
    channels = x.shape[-1]
    norm = norms.get(normalization, name=f"{name}_norm", momentum=bn_momentum, channels=channels)
    act = activations.get(activation, name=f"{name}_act")
    order = [norm, act] if norm_position == "before" else [act, norm]
    for layer in order:
        if layer is not None:
            x = layer(x)
    return x


def dense_unit(x, units, name, *, activation="relu", normalization="batch", norm_position="before",
               initializer="he_normal", l1=0.0, l2=0.0, bn_momentum=0.9, dropout=0.0, seed=None):
    """Dense -> norm/activation -> dropout, as one named unit (`{name}_dense`, ...)."""
    x = keras.layers.Dense(
        units,
        kernel_initializer=initializers.get(initializer, seed=seed),
        kernel_regularizer=weight_regularizer(l1, l2),
        use_bias=normalization in ("none", None) or norm_position == "after",
        name=f"{name}_dense",
    )(x)
    x = norm_act(x, name, activation, normalization, norm_position, bn_momentum)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name=f"{name}_dropout")(x)
    return x


def conv_unit(x, filters, name, *, kernel_size=3, strides=1, activation="relu", normalization="batch",
              norm_position="before", initializer="he_normal", l1=0.0, l2=0.0, bn_momentum=0.9, seed=None):
    """Conv2D -> norm/activation as one named unit (`{name}_conv`, `{name}_norm`, `{name}_act`)."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer=initializers.get(initializer, seed=seed),
        kernel_regularizer=weight_regularizer(l1, l2),
        use_bias=normalization in ("none", None) or norm_position == "after",
        name=f"{name}_conv",
    )(x)
    return norm_act(x, name, activation, normalization, norm_position, bn_momentum)


def classifier_head(x, num_classes, dropout=0.0, initializer="glorot_uniform", l1=0.0, l2=0.0, seed=None):
    """Dropout then the softmax Dense layer, named `head_dropout` and `head_dense`."""
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    return keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=initializers.get(initializer, seed=seed),
        kernel_regularizer=weight_regularizer(l1, l2),
        dtype="float32",
        name="head_dense",
    )(x)


def record_structure(model, stem, stages, head):
    """Stores layer-name groups for transfer (stem, ordered stages, head) on the model.

    Kept in `model.kzoo_structure`; the runner also writes it next to the saved model.
    """
    model.kzoo_structure = {"stem": list(stem), "stages": [list(s) for s in stages], "head": list(head)}
    return model
