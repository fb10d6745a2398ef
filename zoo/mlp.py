"""Multi-layer perceptrons: one configurable builder and thin named variants."""

from __future__ import annotations

import keras

from kzoo.zoo.blocks import classifier_head, dense_unit, model_inputs, record_structure
from kzoo.zoo.registry import register_model


def build_mlp(input_shape, num_classes, preprocessing=None, depth: int = 3, width: int = 128,
              activation="relu", normalization="batch", norm_position: str = "before",
              dropout: float = 0.0, initializer="he_normal", l1: float = 0.0, l2: float = 0.0,
              bn_momentum: float = 0.9, seed: int = 0, name: str = "mlp",
              gaussian_noise: float = 0.0, max_norm: float = 0.0, mc_dropout: bool = False):
    """A plain MLP: `depth` hidden layers of `width` units, each Dense-norm-activation-dropout.

    Args:
        depth: number of hidden layers. Defaults to `3`.
        width: units per hidden layer. Defaults to `128`.
        activation: activation name or table (`kzoo list activations`). Defaults to `"relu"`.
        normalization: `batch`, `layer`, `instance`, `group` or `none`. Defaults to `"batch"`.
        norm_position: `before` or `after` the activation. Defaults to `"before"`.
        dropout: dropout rate after each hidden layer and before the head. Defaults to `0.0`.
        initializer: kernel initializer name (`kzoo list initializers`). Defaults to `"he_normal"`.
        l1, l2: weight penalties (both: elastic net). Defaults to `0.0`.
        bn_momentum: batch-norm moving-average momentum. Defaults to `0.9` (short runs).
        gaussian_noise: std of Gaussian noise added to the (standardized) input in training;
            `0` for none. Defaults to `0.0`.
        max_norm: max-norm constraint on each unit's incoming weights (Srivastava et al. 2014);
            `0` for none. Defaults to `0.0`.
        mc_dropout: keep dropout on at inference (`MCDropout`) for Monte-Carlo uncertainty with
            `kzoo.zoo.layers.mc_predict`; needs `dropout > 0`. Defaults to `False`.
    """
    _check(depth=depth, width=width, dropout=dropout, norm_position=norm_position)
    _check_regularization(dropout, gaussian_noise, max_norm, mc_dropout)
    inputs, x = model_inputs(input_shape, preprocessing, gaussian_noise=gaussian_noise, seed=seed)
    x = keras.layers.Flatten(name="stem_flatten")(x)
    stages = []
    for i in range(depth):
        x = dense_unit(x, width, f"stage{i}_block0", activation=activation, normalization=normalization,
                       norm_position=norm_position, initializer=initializer, l1=l1, l2=l2,
                       bn_momentum=bn_momentum, dropout=dropout, seed=seed, max_norm=max_norm,
                       mc_dropout=mc_dropout)
        stages.append(f"stage{i}_")
    outputs = classifier_head(x, num_classes, initializer="glorot_uniform", l1=l1, l2=l2, seed=seed,
                              max_norm=max_norm)
    model = keras.Model(inputs, outputs, name=name)
    return record_structure(model, ["stem_"], [[s] for s in stages], ["head_"])


def _check(depth, width, dropout, norm_position):
    if depth < 1:
        raise ValueError(f"depth must be at least 1. Received: depth={depth}")
    if width < 1:
        raise ValueError(f"width must be at least 1. Received: width={width}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    if norm_position not in ("before", "after"):
        raise ValueError(f"norm_position must be 'before' or 'after'. Received: norm_position={norm_position!r}")


def _check_regularization(dropout, gaussian_noise, max_norm, mc_dropout):
    if gaussian_noise < 0:
        raise ValueError(f"gaussian_noise must be >= 0. Received: gaussian_noise={gaussian_noise}")
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0. Received: max_norm={max_norm}")
    if mc_dropout and not dropout:
        raise ValueError(f"mc_dropout needs dropout > 0. Received: dropout={dropout}")


@register_model(family="mlp", builder=build_mlp)
def mlp(input_shape, num_classes, preprocessing=None, **kwargs):
    """MLP, 3 hidden layers of 128 units with batch norm (configurable depth/width)."""
    return build_mlp(input_shape, num_classes, preprocessing, **kwargs)


@register_model(family="mlp", builder=build_mlp, defaults={"depth": 10, "width": 256})
def mlp_deep(input_shape, num_classes, preprocessing=None, **kwargs):
    """MLP, 10 hidden layers of 256 units: a deep plain net for initialization studies."""
    return build_mlp(input_shape, num_classes, preprocessing, **{"depth": 10, "width": 256, **kwargs})
