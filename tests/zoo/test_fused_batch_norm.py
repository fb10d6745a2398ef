"""kzoo's fused batch norm trains like Keras's BatchNormalization, through one fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kzoo.zoo import create_model
from kzoo.zoo.layers import FusedBatchNormalization


def _step(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [np.asarray(v) for v in (y, *grads, layer.moving_mean, layer.moving_variance)]


def _pair(shape, **kwargs):
    keras_bn, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    for layer in (keras_bn, fused):
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, shape[-1]))
        layer.beta.assign(np.linspace(-1.0, 1.0, shape[-1]))
    return keras_bn, fused


@pytest.mark.parametrize("shape", [(16, 5, 5, 8), (4, 1, 1, 3)])
def test_training_step_matches_keras(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    keras_bn, fused = _pair(shape, momentum=0.9)
    got, want = _step(fused, x, upstream), _step(keras_bn, x, upstream)
    for name, g, w in zip(["output", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"], got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)
    # The moving statistics moved (one step of momentum 0.9 from mean 0, variance 1).
    assert not np.allclose(got[4], 0.0) and not np.allclose(got[5], 1.0)
    # Inference is Keras's own path: with the same weights, identical to the last bit.
    fused.set_weights(keras_bn.get_weights())
    np.testing.assert_array_equal(fused(x, training=False), keras_bn(x, training=False))


def test_training_step_uses_the_fused_kernel_only_where_it_applies():
    conv = tf.function(lambda layer, x: layer(x, training=True)).get_concrete_function(
        FusedBatchNormalization(), tf.TensorSpec((2, 3, 3, 4)))
    dense = tf.function(lambda layer, x: layer(x, training=True)).get_concrete_function(
        FusedBatchNormalization(), tf.TensorSpec((2, 4)))
    ops = lambda f: {op.type for op in f.graph.get_operations()}  # noqa: E731
    assert "FusedBatchNormV3" in ops(conv)
    assert "FusedBatchNormV3" not in ops(dense)  # 2-D features: Keras's own moments


def test_zoo_model_saves_and_reloads(tmp_path):
    model = create_model("cnn", (8, 8, 1), 10, [], seed=0, filters=[8, 16], normalization="batch")
    assert any(isinstance(layer, FusedBatchNormalization) for layer in model._flatten_layers())
    x = np.random.default_rng(1).normal(size=(6, 8, 8, 1)).astype("float32")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(6) % 10, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("stage0_block0_norm")) is FusedBatchNormalization
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("channels, casts", [(32, False), (24, True)])
def test_bfloat16_features_go_to_the_kernel_as_they_are_only_on_full_16_channel_blocks(channels, casts):
    """Under mixed_bfloat16 the kernel takes the features without casts where oneDNN's blocks
    are full (multiples of 16 channels) and through float32 elsewhere; both train like Keras."""
    shape = (16, 4, 4, channels)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras_bn, fused = _pair(shape, momentum=0.9)
        f = tf.function(lambda x: fused(x, training=True)).get_concrete_function(
            tf.TensorSpec(shape, "bfloat16"))
        kernel = next(op for op in f.graph.get_operations() if op.type == "FusedBatchNormV3")
        assert (kernel.inputs[0].dtype == tf.float32) is casts
        rng = np.random.default_rng(0)
        x = tf.cast(rng.normal(2.0, 3.0, size=shape).astype("float32"), "bfloat16")
        upstream = rng.normal(size=shape).astype("float32")
        got, want = _step(fused, x, upstream), _step(keras_bn, x, upstream)
        for name, g, w in zip(["output", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"], got, want):
            np.testing.assert_allclose(np.asarray(g, "float32"), np.asarray(w, "float32"), rtol=0.05, atol=0.05,
                                       err_msg=name)
    finally:
        keras.mixed_precision.set_global_policy("float32")
