"""Building blocks shared by the zoo's models, named so tooling can select layers."""

from __future__ import annotations

import zlib

import keras

from kzoo.zoo import activations, initializers, norms
from kzoo.zoo.layers import MCDropout, StochasticDepth


def layer_seed(seed, name: str):
    """A seed of its own for each named layer, derived from the model's seed.

    Keras's seeded initializers and dropout layers repeat their draws for the same seed, so
    one seed shared by every layer would start same-shaped layers with identical weights and
    drop the same units in each of them at every step.
    """
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)


def weight_regularizer(l1: float = 0.0, l2: float = 0.0):
    """L1, L2 or elastic-net (both) weight penalty, or None."""
    if l1 and l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l1:
        return keras.regularizers.L1(l1)
    if l2:
        return keras.regularizers.L2(l2)
    return None


def model_inputs(input_shape, preprocessing=None, gaussian_noise: float = 0.0, seed=None):
    """The Input tensor and the tensor after the preprocessing layers.

    With `gaussian_noise > 0`, zero-mean Gaussian noise of that standard deviation is added to
    the preprocessed input in training only (`stem_noise`); training with input noise is
    equivalent to a Tikhonov (weight-decay-like) penalty (Bishop 1995).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for layer in preprocessing or []:
        x = layer(x)
    if gaussian_noise:
        if gaussian_noise < 0:
            raise ValueError(f"gaussian_noise must be >= 0. Received: gaussian_noise={gaussian_noise}")
        x = keras.layers.GaussianNoise(gaussian_noise, seed=layer_seed(seed, "stem_noise"), name="stem_noise")(x)
    return inputs, x


def norm_act(x, name, activation="relu", normalization="batch", norm_position="before", bn_momentum=0.9):
    """Normalization then activation (`before`) or activation then normalization (`after`)."""
    act = activations.get(activation, name=f"{name}_act")

    def norm(t):
        if len(t.shape) < 3 and (normalization.get("name") if isinstance(normalization, dict) else normalization) == "instance":
            # Over no spatial axes each value would be normalized alone, to the constant beta.
            raise ValueError(f"Instance normalization needs spatial axes (a conv layer), not Dense features of "
                             f"shape {tuple(t.shape)}. Received: normalization={normalization!r}")
        layer = norms.get(normalization, name=f"{name}_norm", momentum=bn_momentum, channels=t.shape[-1])
        return t if layer is None else layer(t)

    if norm_position == "before":
        return act(norm(x))
    return norm(act(x))


def kernel_constraint(max_norm: float = 0.0, axis=0):
    """A max-norm constraint on each unit's incoming weight vector, or None when `max_norm` is 0.

    Reference:
        Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
        Overfitting" (dropout with max-norm), https://jmlr.org/papers/v15/srivastava14a.html
    """
    if not max_norm:
        return None
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0. Received: max_norm={max_norm}")
    return keras.constraints.MaxNorm(max_value=max_norm, axis=axis)


def dropout_layer(rate, name, seed=None, mc_dropout: bool = False):
    """Keras's inverted Dropout, or `MCDropout` (also active at inference) with `mc_dropout`."""
    if mc_dropout:
        return MCDropout(rate, seed=layer_seed(seed, name), name=name)
    return keras.layers.Dropout(rate, seed=layer_seed(seed, name), name=name)


def dense_unit(x, units, name, *, activation="relu", normalization="batch", norm_position="before",
               initializer="he_normal", l1=0.0, l2=0.0, bn_momentum=0.9, dropout=0.0, seed=None,
               max_norm=0.0, mc_dropout=False):
    """Dense -> norm/activation -> dropout, as one named unit (`{name}_dense`, ...).

    With a maxout activation of k pieces the Dense layer has `units * k` outputs, so the unit
    still has `units` outputs. `max_norm` constrains each unit's weight vector; `mc_dropout`
    keeps the dropout on at inference.
    """
    x = keras.layers.Dense(
        units * activations.width_factor(activation),
        kernel_initializer=initializers.get(initializer, seed=layer_seed(seed, f"{name}_dense")),
        kernel_regularizer=weight_regularizer(l1, l2),
        kernel_constraint=kernel_constraint(max_norm, axis=0),
        use_bias=normalization in ("none", None) or norm_position == "after",
        name=f"{name}_dense",
    )(x)
    x = norm_act(x, name, activation, normalization, norm_position, bn_momentum)
    if dropout:
        x = dropout_layer(dropout, f"{name}_dropout", seed, mc_dropout)(x)
    return x


def conv_unit(x, filters, name, *, kernel_size=3, strides=1, activation="relu", normalization="batch",
              norm_position="before", initializer="he_normal", l1=0.0, l2=0.0, bn_momentum=0.9, seed=None,
              max_norm=0.0, dropout=0.0, mc_dropout=False):
    """Conv2D -> norm/activation as one named unit (`{name}_conv`, `{name}_norm`, `{name}_act`).

    As `dense_unit`: maxout widens the convolution, `max_norm` constrains each filter, and an
    optional dropout (`{name}_dropout`) follows.
    """
    x = keras.layers.Conv2D(
        filters * activations.width_factor(activation),
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer=initializers.get(initializer, seed=layer_seed(seed, f"{name}_conv")),
        kernel_regularizer=weight_regularizer(l1, l2),
        kernel_constraint=kernel_constraint(max_norm, axis=[0, 1, 2]),
        use_bias=normalization in ("none", None) or norm_position == "after",
        name=f"{name}_conv",
    )(x)
    x = norm_act(x, name, activation, normalization, norm_position, bn_momentum)
    if dropout:
        x = dropout_layer(dropout, f"{name}_dropout", seed, mc_dropout)(x)
    return x


def residual_add(shortcut, branch, name, stochastic_depth: float = 0.0, seed=None):
    """`shortcut + branch` as `{name}_add`; with `stochastic_depth > 0` the branch is dropped
    per example with that probability in training (`StochasticDepth`, Huang et al. 2016)."""
    if stochastic_depth:
        return StochasticDepth(stochastic_depth, seed=layer_seed(seed, f"{name}_add"), name=f"{name}_add")([shortcut, branch])
    return keras.layers.Add(name=f"{name}_add")([shortcut, branch])


def classifier_head(x, num_classes, dropout=0.0, initializer="glorot_uniform", l1=0.0, l2=0.0, seed=None,
                    max_norm=0.0, mc_dropout=False):
    """Dropout then the softmax Dense layer, named `head_dropout` and `head_dense`; a feature map
    is first average-pooled (`head_pool`), any other input of rank > 2 flattened (`head_flatten`)."""
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif len(x.shape) > 2:
        x = keras.layers.Flatten(name="head_flatten")(x)
    if dropout:
        x = dropout_layer(dropout, "head_dropout", seed, mc_dropout)(x)
    return keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=initializers.get(initializer, seed=layer_seed(seed, "head_dense")),
        kernel_regularizer=weight_regularizer(l1, l2),
        kernel_constraint=kernel_constraint(max_norm, axis=0),
        dtype="float32",
        name="head_dense",
    )(x)


def record_structure(model, stem, stages, head):
    """Stores layer-name groups for transfer (stem, ordered stages, head) on the model.

    Kept in `model.kzoo_structure`; the runner also writes it next to the saved model.
    """
    model.kzoo_structure = {"stem": list(stem), "stages": [list(s) for s in stages], "head": list(head)}
    return model
