"""Residual networks: the CIFAR ResNets of He et al. (v1 post-activation, v2 pre-activation)
and the ImageNet-style ResNet-18/34/50.

Every layer is named from its place in the network, so tools can select groups of layers by
name and the grouping survives `model.save` / `keras.models.load_model` without extra state:

- `stem_*`: the first convolution (and, ImageNet-style, its max pooling);
- `stage{i}_block{j}_*`: block `j` of stage `i` (both from 0), e.g. `stage1_block0_conv1`,
  `stage1_block0_shortcut_conv`, `stage1_block0_add`; a v2 network's final normalization and
  activation are `stage{last}_post_norm` / `stage{last}_post_act`;
- `head_*`: global pooling, dropout and the softmax layer.

`kzoo.finetune.model_structure(model)` reads these groups back from the names.

Reference:
    He et al. 2016, "Deep Residual Learning for Image Recognition" (https://arxiv.org/abs/1512.03385);
    He et al. 2016b, "Identity Mappings in Deep Residual Networks" (https://arxiv.org/abs/1603.05027);
    Goyal et al. 2017, "Accurate, Large Minibatch SGD" (https://arxiv.org/abs/1706.02677), zero-initialized
    last normalization of each residual branch;
    Huang et al. 2016, "Deep Networks with Stochastic Depth" (https://arxiv.org/abs/1603.09382).
"""

from __future__ import annotations

import keras
from keras import ops

from kzoo.zoo import activations, initializers, norms
from kzoo.zoo.blocks import (
    classifier_head,
    model_inputs,
    record_structure,
    residual_add,
    weight_regularizer,
)
from kzoo.zoo.registry import register_model

SHORTCUTS = ("identity", "projection")


@keras.saving.register_keras_serializable(package="kzoo")
class PadShortcut(keras.layers.Layer):
    """The parameter-free shortcut of He et al.'s option A: subsample by `strides` and append
    zero channels up to `channels`.

    Args:
        channels: output channels (at least the input's).
        strides: spatial subsampling factor. Defaults to `1`.
    """

    def __init__(self, channels, strides=1, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            raise ValueError(f"channels must be positive. Received: channels={channels}")
        if strides < 1:
            raise ValueError(f"strides must be positive. Received: strides={strides}")
        self.channels = int(channels)
        self.strides = int(strides)

    def build(self, input_shape):
        if input_shape[-1] > self.channels:
            raise ValueError(
                f"PadShortcut cannot shrink {input_shape[-1]} channels. Received: channels={self.channels}")

    def call(self, inputs):
        # A 1x1 average pool with stride s is the subsampling x[:, ::s, ::s]: the same values and
        # gradients, through the pooling kernels (far cheaper than a strided slice and its gradient on CPU).
        x = ops.average_pool(inputs, 1, strides=self.strides, padding="valid") if self.strides > 1 else inputs
        extra = self.channels - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
        return x

    def compute_output_shape(self, input_shape):
        def sub(d):
            return None if d is None else -(-d // self.strides)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "strides": self.strides}


class _Options:
    """Settings every block of one network shares, and a per-layer seed counter (a fixed seed
    per initializer would give equal-shaped layers identical weights)."""

    def __init__(self, activation, normalization, initializer, l2, bn_momentum, zero_init_residual,
                 conv_bias, seed):
        self.activation = activation
        self.normalization = normalization
        self.initializer = initializer
        self.l2 = l2
        self.bn_momentum = bn_momentum
        self.zero_init_residual = zero_init_residual
        self.conv_bias = conv_bias
        self.seed = seed
        self._count = 0

    def next_seed(self):
        self._count += 1
        return None if self.seed is None else self.seed * 1000 + self._count


def _conv(x, filters, kernel_size, name, opts, strides=1, zero=False):
    init = keras.initializers.Zeros() if zero else initializers.get(opts.initializer, seed=opts.next_seed())
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=opts.conv_bias,
        kernel_initializer=init, kernel_regularizer=weight_regularizer(l2=opts.l2), name=name,
    )(x)


def _norm(x, name, opts, zero=False):
    layer = norms.get(opts.normalization, name=name, momentum=opts.bn_momentum, channels=x.shape[-1])
    if layer is None:
        return x
    if zero and hasattr(layer, "gamma_initializer"):
        # Goyal et al.: each residual branch starts as zero, so every block starts as the identity.
        layer.gamma_initializer = keras.initializers.Zeros()
    return layer(x)


def _act(x, name, opts):
    return activations.get(opts.activation, name=name)(x)


def _shortcut(x, out_channels, strides, name, opts, kind, norm=True):
    """Identity when shapes match; otherwise option A (`identity`: subsample and zero-pad) or
    option B (`projection`: a strided 1x1 convolution and normalization)."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    if kind == "identity":
        return PadShortcut(out_channels, strides, name=f"{name}_shortcut_pad")(x)
    x = _conv(x, out_channels, 1, f"{name}_shortcut_conv", opts, strides=strides)
    return _norm(x, f"{name}_shortcut_norm", opts) if norm else x


def _merge(shortcut, branch, name, opts, drop_rate, post_activation):
    # `{name}_add` is a StochasticDepth layer when drop_rate > 0, a plain Add otherwise.
    x = residual_add(shortcut, branch, name, stochastic_depth=drop_rate, seed=opts.next_seed())
    return _act(x, f"{name}_out_act", opts) if post_activation else x


def basic_block(x, filters, name, opts, *, strides=1, version=1, shortcut="identity", drop_rate=0.0):
    """Two 3x3 convolutions with a shortcut around them (He et al. 2016, Fig. 2 left).

    Version 1 adds then activates (`conv-norm-act-conv-norm`, add, act); version 2 normalizes and
    activates first (`norm-act-conv-norm-act-conv`, add), as in He et al. 2016b. Layers are named
    `{name}_conv1`, `{name}_norm1`, ..., `{name}_add`.
    """
    if version == 1:
        sc = _shortcut(x, filters, strides, name, opts, shortcut)
        y = _conv(x, filters, 3, f"{name}_conv1", opts, strides=strides)
        y = _act(_norm(y, f"{name}_norm1", opts), f"{name}_act1", opts)
        y = _conv(y, filters, 3, f"{name}_conv2", opts)
        y = _norm(y, f"{name}_norm2", opts, zero=opts.zero_init_residual)
        return _merge(sc, y, name, opts, drop_rate, post_activation=True)
    pre = _act(_norm(x, f"{name}_pre_norm", opts), f"{name}_pre_act", opts)
    # He et al. 2016b: a projection shortcut takes the pre-activated input; option A takes x.
    sc = _shortcut(x if shortcut == "identity" else pre, filters, strides, name, opts, shortcut, norm=False)
    y = _conv(pre, filters, 3, f"{name}_conv1", opts, strides=strides)
    y = _act(_norm(y, f"{name}_norm1", opts), f"{name}_act1", opts)
    y = _conv(y, filters, 3, f"{name}_conv2", opts, zero=opts.zero_init_residual)
    return _merge(sc, y, name, opts, drop_rate, post_activation=False)


def bottleneck_block(x, filters, name, opts, *, strides=1, version=1, shortcut="projection", drop_rate=0.0):
    """1x1 reduce, 3x3, 1x1 expand to `4 * filters`, with a shortcut (He et al. 2016, Fig. 5 right).

    The stride sits on the 3x3 convolution. Layers are named `{name}_conv1` ... `{name}_conv3`.
    """
    out = 4 * filters
    if version == 1:
        sc = _shortcut(x, out, strides, name, opts, shortcut)
        y = _act(_norm(_conv(x, filters, 1, f"{name}_conv1", opts), f"{name}_norm1", opts), f"{name}_act1", opts)
        y = _conv(y, filters, 3, f"{name}_conv2", opts, strides=strides)
        y = _act(_norm(y, f"{name}_norm2", opts), f"{name}_act2", opts)
        y = _norm(_conv(y, out, 1, f"{name}_conv3", opts), f"{name}_norm3", opts, zero=opts.zero_init_residual)
        return _merge(sc, y, name, opts, drop_rate, post_activation=True)
    pre = _act(_norm(x, f"{name}_pre_norm", opts), f"{name}_pre_act", opts)
    sc = _shortcut(x if shortcut == "identity" else pre, out, strides, name, opts, shortcut, norm=False)
    y = _act(_norm(_conv(pre, filters, 1, f"{name}_conv1", opts), f"{name}_norm1", opts), f"{name}_act1", opts)
    y = _conv(y, filters, 3, f"{name}_conv2", opts, strides=strides)
    y = _act(_norm(y, f"{name}_norm2", opts), f"{name}_act2", opts)
    y = _conv(y, out, 1, f"{name}_conv3", opts, zero=opts.zero_init_residual)
    return _merge(sc, y, name, opts, drop_rate, post_activation=False)


def _check(version, shortcut, stochastic_depth, width, dropout):
    if version not in (1, 2):
        raise ValueError(f"version must be 1 (post-activation) or 2 (pre-activation). Received: version={version}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}. Received: shortcut={shortcut!r}")
    if not 0 <= stochastic_depth < 1:
        raise ValueError(f"stochastic_depth must be in [0, 1). Received: stochastic_depth={stochastic_depth}")
    if width <= 0:
        raise ValueError(f"width must be positive. Received: width={width}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")


def _stages(x, stage_filters, blocks_per_stage, block, opts, version, shortcut, stochastic_depth,
            first_strides):
    total = sum(blocks_per_stage)
    index = 0
    for i, (filters, n) in enumerate(zip(stage_filters, blocks_per_stage)):
        for j in range(n):
            strides = (first_strides if i == 0 else 2) if j == 0 else 1
            # Huang et al.: the drop rate grows linearly with depth to `stochastic_depth` at the last block.
            rate = stochastic_depth * (index + 1) / total
            x = block(x, filters, f"stage{i}_block{j}", opts, strides=strides, version=version,
                      shortcut=shortcut, drop_rate=rate)
            index += 1
    if version == 2:
        last = len(stage_filters) - 1
        x = _act(_norm(x, f"stage{last}_post_norm", opts), f"stage{last}_post_act", opts)
    return x


def _finish(x, inputs, num_classes, n_stages, dropout, l2, seed, name):
    outputs = classifier_head(x, num_classes, dropout=dropout, initializer="glorot_uniform", l2=l2, seed=seed)
    model = keras.Model(inputs, outputs, name=name)
    return record_structure(model, ["stem_"], [[f"stage{i}_"] for i in range(n_stages)], ["head_"])


def build_cifar_resnet(input_shape, num_classes, preprocessing=None, depth: int = 20, version: int = 1,
                       shortcut: str = "identity", width: float = 1.0, zero_init_residual: bool = False,
                       stochastic_depth: float = 0.0, activation="relu", normalization="batch",
                       initializer="he_normal", l2: float = 0.0, bn_momentum: float = 0.9,
                       dropout: float = 0.0, seed: int = 0, name: str = ""):
    """The CIFAR ResNet of He et al. 2016 (section 4.2): a 3x3 stem with 16 filters, three stages of
    `(depth - 2) / 6` basic blocks with 16, 32 and 64 filters, global average pooling, softmax.

    Args:
        depth: `6n + 2` layers (20, 32, 44, 56, 110, ...). Defaults to `20`.
        version: `1` post-activation (He et al. 2016) or `2` pre-activation (He et al. 2016b).
            Defaults to `1`.
        shortcut: `identity` (option A: zero-padded identity where shapes change, no parameters,
            as in the paper's CIFAR runs) or `projection` (option B: 1x1 convolutions there).
            Defaults to `"identity"`.
        width: multiplier of every layer's filters. Defaults to `1.0`.
        zero_init_residual: start the last normalization (v2: convolution) of each residual branch
            at zero (Goyal et al. 2017). Defaults to `False`.
        stochastic_depth: drop rate of the last block's branch, growing linearly from the first
            (Huang et al. 2016). Defaults to `0.0`.
        activation, normalization, initializer: any registered name (`kzoo list activations`,
            `norms`, `initializers`). Default to `relu`, `batch`, `he_normal`.
        l2: L2 penalty on every kernel (He et al.'s weight decay 1e-4 is `l2 = 5e-5`, since the
            penalty's gradient is `2 * l2 * w`). Defaults to `0.0`.
        bn_momentum: batch-norm moving-average momentum. Defaults to `0.9`.
        dropout: dropout before the softmax layer. Defaults to `0.0`.

    Example:
        >>> model = kzoo.zoo.create_model("resnet56", (32, 32, 3), 10, version=2)
    """
    _check(version, shortcut, stochastic_depth, width, dropout)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...). Received: depth={depth}")
    n = (depth - 2) // 6
    opts = _Options(activation, normalization, initializer, l2, bn_momentum, zero_init_residual, False, seed)
    inputs, x = model_inputs(input_shape, preprocessing)
    stage_filters = [max(1, round(f * width)) for f in (16, 32, 64)]
    x = _conv(x, stage_filters[0], 3, "stem_conv", opts)
    if version == 1:
        x = _act(_norm(x, "stem_norm", opts), "stem_act", opts)
    x = _stages(x, stage_filters, [n] * 3, basic_block, opts, version, shortcut, stochastic_depth, 1)
    return _finish(x, inputs, num_classes, 3, dropout, l2, seed,
                   name or f"resnet{depth}{'_v2' if version == 2 else ''}")


def build_imagenet_resnet(input_shape, num_classes, preprocessing=None, blocks: list = (2, 2, 2, 2),
                          bottleneck: bool = False, version: int = 1, shortcut: str = "projection",
                          width: float = 1.0, zero_init_residual: bool = False,
                          stochastic_depth: float = 0.0, activation="relu", normalization="batch",
                          initializer="he_normal", l2: float = 0.0, bn_momentum: float = 0.9,
                          conv_bias: bool = True, dropout: float = 0.0, seed: int = 0, name: str = ""):
    """The ImageNet ResNet of He et al. 2016 (Table 1): a 7x7 stride-2 stem and 3x3 max pooling,
    four stages (64, 128, 256, 512 filters; x4 outputs with bottlenecks), global pooling, softmax.

    Args:
        blocks: blocks per stage: `[2, 2, 2, 2]` ResNet-18, `[3, 4, 6, 3]` ResNet-34/50.
            Defaults to `[2, 2, 2, 2]`.
        bottleneck: 1x1-3x3-1x1 bottleneck blocks (ResNet-50 and deeper). Defaults to `False`.
        shortcut: `projection` (option B) or `identity` (option A). Defaults to `"projection"`.
        conv_bias: give convolutions a bias, as `keras.applications.ResNet50` does, so layer
            shapes and parameter counts match it. Defaults to `True`.
        Other arguments as for `build_cifar_resnet`.
    """
    _check(version, shortcut, stochastic_depth, width, dropout)
    blocks = list(blocks)
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"blocks must be 4 positive ints. Received: blocks={blocks}")
    opts = _Options(activation, normalization, initializer, l2, bn_momentum, zero_init_residual, conv_bias, seed)
    inputs, x = model_inputs(input_shape, preprocessing)
    stage_filters = [max(1, round(f * width)) for f in (64, 128, 256, 512)]
    x = _conv(x, stage_filters[0], 7, "stem_conv", opts, strides=2)
    x = _act(_norm(x, "stem_norm", opts), "stem_act", opts)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    block = bottleneck_block if bottleneck else basic_block
    x = _stages(x, stage_filters, blocks, block, opts, version, shortcut, stochastic_depth, 1)
    depth = sum(blocks) * (3 if bottleneck else 2) + 2
    return _finish(x, inputs, num_classes, 4, dropout, l2, seed,
                   name or f"resnet{depth}{'_v2' if version == 2 else ''}")


def _cifar(depth):
    def builder(input_shape, num_classes, preprocessing=None, **kwargs):
        return build_cifar_resnet(input_shape, num_classes, preprocessing, **{"depth": depth, **kwargs})

    builder.__name__ = f"resnet{depth}"
    builder.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016), 3 stages of {(depth - 2) // 6} basic blocks; version=2 for pre-activation."
    register_model(builder, family="resnet", builder=build_cifar_resnet, defaults={"depth": depth})
    return builder


resnet20, resnet32, resnet44, resnet56, resnet110 = (_cifar(d) for d in (20, 32, 44, 56, 110))


def _imagenet(depth, blocks, bottleneck):
    def builder(input_shape, num_classes, preprocessing=None, **kwargs):
        return build_imagenet_resnet(input_shape, num_classes, preprocessing,
                                     **{"blocks": blocks, "bottleneck": bottleneck, **kwargs})

    kind = "bottleneck" if bottleneck else "basic"
    builder.__name__ = f"resnet{depth}"
    builder.__doc__ = f"ImageNet-style ResNet-{depth} (He et al. 2016), {kind} blocks {blocks}, 7x7 stem."
    register_model(builder, family="resnet", builder=build_imagenet_resnet,
                   defaults={"blocks": list(blocks), "bottleneck": bottleneck})
    return builder


resnet18 = _imagenet(18, [2, 2, 2, 2], False)
resnet34 = _imagenet(34, [3, 4, 6, 3], False)
resnet50 = _imagenet(50, [3, 4, 6, 3], True)
