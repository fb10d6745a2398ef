"""DenseNet and DenseNet-BC for small images: every layer sees the feature maps of all the
layers before it in its dense block.

Reference:
    Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected Convolutional Networks"
    (https://arxiv.org/abs/1608.06993).
"""

from __future__ import annotations

import keras

from kzoo.zoo import initializers
from kzoo.zoo.blocks import (
    classifier_head,
    model_inputs,
    norm_act,
    record_structure,
    weight_regularizer,
)
from kzoo.zoo.fixup import layer_seed
from kzoo.zoo.registry import register_model


def _conv(x, filters, kernel_size, name, initializer, l2, seed):
    return keras.layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False,
        kernel_initializer=initializers.get(initializer, seed=layer_seed(seed, name)),
        kernel_regularizer=weight_regularizer(0.0, l2), name=name,
    )(x)


def dense_layer(x, growth_rate, name, *, bottleneck=False, activation="relu", normalization="batch",
                bn_momentum=0.9, dropout=0.0, initializer="he_normal", l2=0.0, seed=None):
    """One layer of a dense block: BN-ReLU-Conv3x3 producing `growth_rate` maps, concatenated
    to its input. With `bottleneck` (DenseNet-B), a BN-ReLU-Conv1x1 to `4 * growth_rate` maps
    comes first. Layers are named `{name}_conv`, `{name}_concat`, ...
    """
    y = x
    if bottleneck:
        y = norm_act(y, f"{name}_bottleneck", activation, normalization, "before", bn_momentum)
        y = _conv(y, 4 * growth_rate, 1, f"{name}_bottleneck_conv", initializer, l2, seed)
        if dropout:
            y = keras.layers.Dropout(dropout, seed=seed, name=f"{name}_bottleneck_dropout")(y)
    y = norm_act(y, name, activation, normalization, "before", bn_momentum)
    y = _conv(y, growth_rate, 3, f"{name}_conv", initializer, l2, seed)
    if dropout:
        y = keras.layers.Dropout(dropout, seed=seed, name=f"{name}_dropout")(y)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([x, y])


def transition(x, filters, name, *, activation="relu", normalization="batch", bn_momentum=0.9,
               dropout=0.0, initializer="he_normal", l2=0.0, seed=None):
    """BN-ReLU-Conv1x1 to `filters` maps, then 2x2 average pooling (`{name}_conv`, `{name}_pool`)."""
    x = norm_act(x, name, activation, normalization, "before", bn_momentum)
    x = _conv(x, filters, 1, f"{name}_conv", initializer, l2, seed)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name=f"{name}_dropout")(x)
    if min(x.shape[1], x.shape[2]) >= 2:
        x = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    return x


def build_densenet(input_shape, num_classes, preprocessing=None, blocks: list = (12, 12, 12),
                   growth_rate: int = 12, bottleneck: bool = False, compression: float = 1.0,
                   stem_filters: int = 0, activation="relu", normalization="batch",
                   bn_momentum: float = 0.9, dropout: float = 0.0, initializer="he_normal",
                   l2: float = 0.0, seed: int = 0, name: str = "densenet"):
    """A CIFAR-style DenseNet: a 3x3 stem conv, dense blocks joined by transitions, then
    BN-ReLU, global average pooling and a softmax head.

    Stage `i` holds the transition into it (`stage{i}_transition_*`, for `i >= 1`) and its dense
    block's layers (`stage{i}_block{j}_*`), so staged unfreezing selects them by prefix.

    Args:
        blocks: layers in each dense block. Defaults to `[12, 12, 12]` (DenseNet-40).
        growth_rate: feature maps each layer adds (k). Defaults to `12`.
        bottleneck: a 1x1 conv to 4k maps before each 3x3 conv (DenseNet-B). Defaults to `False`.
        compression: fraction of maps a transition keeps (theta; below 1 is DenseNet-C).
            Defaults to `1.0`.
        stem_filters: maps of the stem conv; `0` means 16, or 2k with a bottleneck and
            compression (the paper's choice). Defaults to `0`.
        dropout: dropout after each conv (the paper's 0.2 without augmentation). Defaults to `0.0`.
        l2: L2 weight penalty on the convs and the head. Defaults to `0.0`.
        Other arguments as for `mlp`.

    Example:
        >>> model = build_densenet((32, 32, 3), 10, blocks=[16, 16, 16], bottleneck=True,
        ...                        compression=0.5)  # DenseNet-BC-100, 0.8M parameters

    Reference:
        Huang et al. 2017, "Densely Connected Convolutional Networks"
        (https://arxiv.org/abs/1608.06993).
    """
    blocks = list(blocks)
    if not blocks or any(not isinstance(b, int) or b < 1 for b in blocks):
        raise ValueError(f"blocks must be a non-empty list of positive ints. Received: blocks={blocks}")
    if growth_rate < 1:
        raise ValueError(f"growth_rate must be at least 1. Received: growth_rate={growth_rate}")
    if not 0 < compression <= 1:
        raise ValueError(f"compression must be in (0, 1]. Received: compression={compression}")
    if stem_filters < 0:
        raise ValueError(f"stem_filters must be >= 0. Received: stem_filters={stem_filters}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    if not stem_filters:
        stem_filters = 2 * growth_rate if bottleneck and compression < 1 else 16
    common = dict(activation=activation, normalization=normalization, bn_momentum=bn_momentum,
                  dropout=dropout, initializer=initializer, l2=l2, seed=seed)

    inputs, x = model_inputs(input_shape, preprocessing)
    x = _conv(x, stem_filters, 3, "stem_conv", initializer, l2, seed)
    for i, layers in enumerate(blocks):
        if i > 0:
            x = transition(x, int(x.shape[-1] * compression), f"stage{i}_transition", **common)
        for j in range(layers):
            x = dense_layer(x, growth_rate, f"stage{i}_block{j}", bottleneck=bottleneck, **common)
    x = norm_act(x, "head", activation, normalization, "before", bn_momentum)
    outputs = classifier_head(x, num_classes, initializer="glorot_uniform", l2=l2, seed=seed)
    model = keras.Model(inputs, outputs, name=name)
    return record_structure(model, ["stem_"], [[f"stage{i}_"] for i in range(len(blocks))], ["head_"])


@register_model(family="densenet", builder=build_densenet)
def densenet(input_shape, num_classes, preprocessing=None, **kwargs):
    """DenseNet, configurable blocks, growth rate, bottleneck and compression (default DenseNet-40)."""
    return build_densenet(input_shape, num_classes, preprocessing, **kwargs)


@register_model(family="densenet", builder=build_densenet, params="1.0M",
                defaults={"blocks": [12, 12, 12], "growth_rate": 12})
def densenet40(input_shape, num_classes, preprocessing=None, **kwargs):
    """DenseNet-40 (k=12): 3 dense blocks of 12 BN-ReLU-Conv3x3 layers, 1.0M parameters on CIFAR."""
    return build_densenet(input_shape, num_classes, preprocessing,
                          **{"blocks": [12, 12, 12], "growth_rate": 12, "name": "densenet40", **kwargs})


@register_model(family="densenet", builder=build_densenet, params="0.8M",
                defaults={"blocks": [16, 16, 16], "growth_rate": 12, "bottleneck": True, "compression": 0.5})
def densenet_bc100(input_shape, num_classes, preprocessing=None, **kwargs):
    """DenseNet-BC-100 (k=12): bottleneck layers, compression 0.5, 0.8M parameters on CIFAR."""
    return build_densenet(input_shape, num_classes, preprocessing,
                          **{"blocks": [16, 16, 16], "growth_rate": 12, "bottleneck": True,
                             "compression": 0.5, "name": "densenet_bc100", **kwargs})
