"""Plain convolutional networks: conv-norm-activation blocks, pooling, a global-pooling head."""

from __future__ import annotations

import keras

from kzoo.zoo.blocks import classifier_head, conv_unit, model_inputs, record_structure
from kzoo.zoo.mlp import _check_regularization
from kzoo.zoo.registry import register_model


def build_cnn(input_shape, num_classes, preprocessing=None, filters: list = (32, 64),
              convs_per_stage: int = 2, kernel_size: int = 3, pooling: str = "max",
              activation="relu", normalization="batch", norm_position: str = "before",
              dropout: float = 0.0, initializer="he_normal", l1: float = 0.0, l2: float = 0.0,
              bn_momentum: float = 0.9, head_pooling: str = "avg", seed: int = 0, name: str = "cnn",
              gaussian_noise: float = 0.0, max_norm: float = 0.0, mc_dropout: bool = False):
    """A VGG-style CNN: for each entry of `filters`, a stage of `convs_per_stage` conv units,
    then 2x2 pooling (except after the last stage), then global pooling and a softmax head.

    Args:
        filters: channels of each stage. Defaults to `[32, 64]`.
        convs_per_stage: conv-norm-activation units per stage. Defaults to `2`.
        kernel_size: square kernel size. Defaults to `3`.
        pooling: `max` or `avg` pooling between stages. Defaults to `"max"`.
        head_pooling: `avg` or `max` global pooling before the head. Defaults to `"avg"`.
        dropout: dropout before the head. Defaults to `0.0`.
        gaussian_noise, max_norm, mc_dropout: as for `mlp` (max-norm applies to each filter).
        Other arguments as for `mlp`.
    """
    _check_regularization(dropout, gaussian_noise, max_norm, mc_dropout)
    filters = list(filters)
    if not filters or min(filters) < 1:
        raise ValueError(f"filters must be a non-empty list of positive ints. Received: filters={filters}")
    if pooling not in ("max", "avg"):
        raise ValueError(f"pooling must be 'max' or 'avg'. Received: pooling={pooling!r}")
    if head_pooling not in ("max", "avg"):
        raise ValueError(f"head_pooling must be 'max' or 'avg'. Received: head_pooling={head_pooling!r}")
    if convs_per_stage < 1:
        raise ValueError(f"convs_per_stage must be at least 1. Received: convs_per_stage={convs_per_stage}")
    inputs, x = model_inputs(input_shape, preprocessing, gaussian_noise=gaussian_noise, seed=seed)
    pool = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
    for i, f in enumerate(filters):
        for j in range(convs_per_stage):
            x = conv_unit(x, f, f"stage{i}_block{j}", kernel_size=kernel_size, activation=activation,
                          normalization=normalization, norm_position=norm_position,
                          initializer=initializer, l1=l1, l2=l2, bn_momentum=bn_momentum, seed=seed,
                          max_norm=max_norm)
        if i < len(filters) - 1 and min(x.shape[1], x.shape[2]) >= 2:
            x = pool(2, name=f"stage{i}_pool")(x)
    gp = keras.layers.GlobalAveragePooling2D if head_pooling == "avg" else keras.layers.GlobalMaxPooling2D
    x = gp(name="head_pool")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout, initializer="glorot_uniform", l1=l1, l2=l2, seed=seed,
                              max_norm=max_norm, mc_dropout=mc_dropout)
    model = keras.Model(inputs, outputs, name=name)
    return record_structure(model, [], [[f"stage{i}_"] for i in range(len(filters))], ["head_"])


@register_model(family="cnn", builder=build_cnn)
def cnn(input_shape, num_classes, preprocessing=None, **kwargs):
    """CNN, 2 stages of 2 conv-BN-ReLU units (32, 64 filters), global average pooling head."""
    return build_cnn(input_shape, num_classes, preprocessing, **kwargs)


@register_model(family="cnn", builder=build_cnn, defaults={"filters": [32, 64, 128]})
def cnn_small(input_shape, num_classes, preprocessing=None, **kwargs):
    """CNN, 3 stages of 2 conv-BN-ReLU units (32, 64, 128 filters), for 28x28 and 32x32 inputs."""
    return build_cnn(input_shape, num_classes, preprocessing, **{"filters": [32, 64, 128], **kwargs})
