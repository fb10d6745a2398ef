"""Batch-norm folding: an inference model with each BatchNorm merged into the layer before it."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.errors import UserError

# Layers whose kernel's last axis is the output channel, so a per-channel scale folds in.
FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def fold_batchnorm(model) -> keras.Model:
    """Returns a new inference model in which every BatchNormalization that directly follows
    a Dense or Conv layer is folded into that layer's kernel and bias.

    At inference batch norm is the per-channel affine map y = gamma * (z - mean) / sqrt(var + eps)
    + beta with fixed statistics, so with s = gamma / sqrt(var + eps) the pair `z = x W + b; y = BN(z)`
    equals `x (W s) + (beta + (b - mean) s)`: one layer instead of two. A BatchNorm is folded only
    when the layer before it has no activation of its own, normalizes the channel axis, and its
    output feeds nothing else; other layers are copied with their weights. Nested functional and
    sequential models are folded too. The original model is left untouched.

    Args:
        model: a functional or sequential Keras model.

    Returns:
        A functional model with the same inputs and outputs (in inference mode) as `model`, that
        saves and loads like any model.

    Example:
        >>> folded = kzoo.zoo.fold_batchnorm(model)
        >>> np.allclose(folded.predict(x), model.predict(x), rtol=1e-4, atol=1e-6)
        True

    Reference:
        Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
        Integer-Arithmetic-Only Inference" (section 3.2, batch-norm folding),
        https://arxiv.org/abs/1712.05877
    """
    model = _as_functional(model)
    pairs = _foldable_pairs(model)
    folded_bns = {id(bn) for bn in pairs.values()}
    clones = []  # (original, clone) to copy weights into once the clone is built
    bn_clones = set()

    def clone_function(layer):
        if isinstance(layer, keras.Model):
            return fold_batchnorm(layer)
        config = layer.get_config()
        if id(layer) in pairs:
            config = {**config, "use_bias": True, "bias_initializer": "zeros"}
        clone = layer.__class__.from_config(config)
        clones.append((layer, clone))
        if id(layer) in folded_bns:
            bn_clones.add(id(clone))
        return clone

    def call_function(layer, *args, **kwargs):
        if id(layer) in bn_clones:
            return args[0]  # the folded BatchNorm disappears from the graph
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)
    for original, clone in clones:
        if id(original) in folded_bns:
            continue
        if id(original) in pairs:
            clone.set_weights(_folded_weights(original, pairs[id(original)]))
        else:
            clone.set_weights(original.get_weights())
    if hasattr(model, "kzoo_structure"):
        folded.kzoo_structure = model.kzoo_structure
    return folded


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise UserError(f"fold_batchnorm needs a built model with a known input shape. Received: model={model.name}")
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if not hasattr(model, "_nodes_by_depth"):
        raise UserError(
            f"fold_batchnorm works on functional and sequential models, not subclassed ones. Received: model={model.name}"
        )
    return model


def _foldable_pairs(model) -> dict:
    """{id(linear layer): its BatchNormalization} for every pair that can be folded."""
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    consumers: dict[int, int] = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    for t in model.outputs:
        consumers[id(t)] = consumers.get(id(t), 0) + 1
    calls: dict[int, int] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1

    pairs = {}
    for node in nodes:
        bn = node.operation
        if not isinstance(bn, keras.layers.BatchNormalization) or calls[id(bn)] != 1 or len(node.input_tensors) != 1:
            continue
        tensor = node.input_tensors[0]
        producer = tensor._keras_history.operation
        if (
            isinstance(producer, FOLDABLE)
            and calls.get(id(producer)) == 1
            and consumers.get(id(tensor)) == 1
            and producer.activation in (None, keras.activations.linear)
            and getattr(producer, "data_format", "channels_last") == "channels_last"
            and bn.axis in (-1, len(tensor.shape) - 1)
            and not getattr(producer, "lora_enabled", False)
        ):
            pairs[id(producer)] = bn
    return pairs


def _folded_weights(layer, bn) -> list:
    """The kernel and bias of `layer` with `bn`'s inference-time affine map folded in."""
    kernel = np.asarray(layer.kernel.numpy(), dtype="float64")
    channels = kernel.shape[-1]
    bias = np.asarray(layer.bias.numpy(), dtype="float64") if layer.use_bias else np.zeros(channels)
    gamma = np.asarray(bn.gamma.numpy(), dtype="float64") if bn.scale else np.ones(channels)
    beta = np.asarray(bn.beta.numpy(), dtype="float64") if bn.center else np.zeros(channels)
    mean = np.asarray(bn.moving_mean.numpy(), dtype="float64")
    var = np.asarray(bn.moving_variance.numpy(), dtype="float64")
    scale = gamma / np.sqrt(var + bn.epsilon)
    dtype = layer.kernel.dtype
    return [(kernel * scale).astype(dtype), (beta + (bias - mean) * scale).astype(dtype)]
