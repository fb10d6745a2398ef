"""Fixup residual networks: CIFAR-style ResNets with no normalization layer, trainable at
depth because of how they are initialized.

The Fixup rule, for L residual branches of m layers each:
    1. the last layer of every residual branch, and the classifier, start at zero;
    2. the other layers of a branch start with He init scaled by L^(-1/(2m-2));
    3. a scalar bias before each convolution and activation, and a scalar multiplier at the end
       of each branch, take the place of the normalization layers' shifts and scales.
At initialization each block is then the identity, so the output variance does not grow with
depth; with plain He init and no normalization it doubles with every block.

Reference:
    Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning Without Normalization"
    (https://arxiv.org/abs/1901.09321).
"""

from __future__ import annotations

import keras

from kzoo.zoo.blocks import (
    classifier_head,
    layer_seed,
    model_inputs,
    record_structure,
    weight_regularizer,
)
from kzoo.zoo.layers.scalar import ScalarBias, ScalarMultiplier
from kzoo.zoo.registry import register_model

INITS = ("fixup", "he")


def fixup_scale(num_branches: int, branch_layers: int = 2) -> float:
    """Fixup's factor on the He standard deviation: `L ** (-1 / (2m - 2))`."""
    if num_branches < 1 or branch_layers < 2:
        raise ValueError(f"Fixup needs L >= 1 branches of m >= 2 layers. Received: L={num_branches}, m={branch_layers}")
    return num_branches ** (-1.0 / (2 * branch_layers - 2))


def _he(scale, seed):
    # He normal with its standard deviation multiplied by `scale` (the variance by scale**2).
    return keras.initializers.VarianceScaling(2.0 * scale**2, mode="fan_in", distribution="truncated_normal",
                                              seed=seed)


def fixup_block(x, filters, name, *, strides=1, num_branches=1, init="fixup", activation="relu",
                scalar_lr=0.1, l2=0.0, seed=None):
    """A basic residual block without normalization, with Fixup's scalar biases and multiplier.

    `x + b1a -> conv3x3 -> + b1b -> act -> + b2a -> conv3x3 -> * s + b2b`, added to the
    shortcut (a 1x1 strided projection of `x + b1a` when the shape changes), then the activation.
    """
    branch_scale = fixup_scale(num_branches) if init == "fixup" else 1.0
    def last_init(layer_seed_value):
        return keras.initializers.Zeros() if init == "fixup" else _he(1.0, layer_seed_value)

    def conv(y, kernel, stride, initializer, suffix):
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                                   kernel_initializer=initializer(layer_seed(seed, f"{name}_{suffix}")),
                                   kernel_regularizer=weight_regularizer(0.0, l2), name=f"{name}_{suffix}")(y)

    shifted = ScalarBias(lr_multiplier=scalar_lr, name=f"{name}_bias1a")(x)
    y = conv(shifted, 3, strides, lambda s: _he(branch_scale, s), "conv1")
    y = ScalarBias(lr_multiplier=scalar_lr, name=f"{name}_bias1b")(y)
    y = keras.layers.Activation(activation, name=f"{name}_act1")(y)
    y = ScalarBias(lr_multiplier=scalar_lr, name=f"{name}_bias2a")(y)
    y = conv(y, 3, 1, last_init, "conv2")
    y = ScalarMultiplier(lr_multiplier=scalar_lr, name=f"{name}_scale")(y)
    y = ScalarBias(lr_multiplier=scalar_lr, name=f"{name}_bias2b")(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(shifted, 1, strides, lambda s: _he(1.0, s), "shortcut_conv")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation(activation, name=f"{name}_act2")(y)


def build_fixup_resnet(input_shape, num_classes, preprocessing=None, blocks_per_stage: int = 3,
                       filters: list = (16, 32, 64), init: str = "fixup", activation="relu",
                       scalar_lr: float = 0.1, dropout: float = 0.0, l2: float = 0.0, seed: int = 0, name: str = "fixup_resnet"):
    """A CIFAR ResNet (depth `6 * blocks_per_stage + 2`) with no normalization layer.

    A 3x3 stem conv, then one stage per entry of `filters` (stride 2 from the second on) of
    `blocks_per_stage` Fixup blocks, global average pooling, a scalar bias and the softmax head.
    Layers are named `stem_*`, `stage{i}_block{j}_*` and `head_*`.

    Args:
        blocks_per_stage: residual blocks per stage (n; 3 gives ResNet-20, 18 ResNet-110).
            Defaults to `3`.
        filters: channels of each stage. Defaults to `[16, 32, 64]`.
        init: `fixup` (the rule above) or `he` (He init everywhere, Glorot head: the same
            network without Fixup, which explodes at depth). Defaults to `"fixup"`.
        activation: the activation after the stem, inside each block and after each addition.
            Defaults to `"relu"`.
        scalar_lr: learning-rate multiplier of the scalar biases and multipliers (exact for SGD;
            see `ScalarBias`): a scalar's gradient sums over a whole feature map, so it is
            trained slower than the convs. Defaults to `0.1`.
        dropout: dropout before the head. Defaults to `0.0`.
        l2: L2 weight penalty on convs and head. Defaults to `0.0`.

    Reference:
        Zhang et al. 2019, "Fixup Initialization" (https://arxiv.org/abs/1901.09321).
    """
    filters = list(filters)
    if blocks_per_stage < 1:
        raise ValueError(f"blocks_per_stage must be at least 1. Received: blocks_per_stage={blocks_per_stage}")
    if not filters or min(filters) < 1:
        raise ValueError(f"filters must be a non-empty list of positive ints. Received: filters={filters}")
    if scalar_lr <= 0:
        raise ValueError(f"scalar_lr must be positive. Received: scalar_lr={scalar_lr}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}. Received: init={init!r}")
    num_branches = blocks_per_stage * len(filters)
    inputs, x = model_inputs(input_shape, preprocessing)
    x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, kernel_initializer=_he(1.0, layer_seed(seed, "stem_conv")),
                            kernel_regularizer=weight_regularizer(0.0, l2), name="stem_conv")(x)
    x = ScalarBias(lr_multiplier=scalar_lr, name="stem_bias")(x)
    x = keras.layers.Activation(activation, name="stem_act")(x)
    for i, f in enumerate(filters):
        for j in range(blocks_per_stage):
            strides = 2 if i > 0 and j == 0 and min(x.shape[1], x.shape[2]) >= 2 else 1
            x = fixup_block(x, f, f"stage{i}_block{j}", strides=strides, num_branches=num_branches,
                            init=init, activation=activation, scalar_lr=scalar_lr, l2=l2, seed=seed)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = ScalarBias(lr_multiplier=scalar_lr, name="head_bias")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout,
                              initializer="zeros" if init == "fixup" else "glorot_uniform", l2=l2, seed=seed)
    model = keras.Model(inputs, outputs, name=name)
    return record_structure(model, ["stem_"], [[f"stage{i}_"] for i in range(len(filters))], ["head_"])


def _register(depth: int, init: str):
    n = (depth - 2) // 6
    prefix = "fixup" if init == "fixup" else "nonorm"
    key = f"{prefix}_resnet{depth}"

    def builder(input_shape, num_classes, preprocessing=None, **kwargs):
        return build_fixup_resnet(input_shape, num_classes, preprocessing,
                                  **{"blocks_per_stage": n, "init": init, "name": key, **kwargs})

    builder.__name__ = key
    builder.__doc__ = (
        f"ResNet-{depth} (CIFAR), no normalization, Fixup init: zero-init branch ends, scalar biases."
        if init == "fixup" else
        f"ResNet-{depth} (CIFAR), no normalization, plain He init: Fixup's exploding twin."
    )
    register_model(builder, name=key, family="fixup", builder=build_fixup_resnet,
                   defaults={"blocks_per_stage": n, "init": init})


for _depth in (20, 32, 44, 56, 110):
    _register(_depth, "fixup")
for _depth in (20, 110):
    _register(_depth, "he")
