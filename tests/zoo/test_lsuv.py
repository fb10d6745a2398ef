"""LSUV on Keras 3 models: functional, nested, convolutional, and from a recipe."""

import keras
import numpy as np
import pytest

from kzoo.errors import UserError
from kzoo.zoo import create_model
from kzoo.zoo.initializers import lsuv_init
from kzoo.zoo.lsuv import layer_output, linear_layers


def _nested_model():
    inner = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32, name="inner_a"), keras.layers.Activation("tanh"),
                              keras.layers.Dense(32, activation="relu", name="inner_b")], name="inner")
    inputs = keras.Input((20,))
    x = keras.layers.Dense(32, activation="relu", name="outer_a",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=0))(inputs)
    x = inner(x)
    outputs = keras.layers.Dense(5, name="outer_head")(x)
    return keras.Model(inputs, outputs)


def test_lsuv_reaches_unit_variance_in_nested_models():
    model = _nested_model()
    x = np.random.default_rng(0).standard_normal((256, 20)).astype("float32") * 4 + 1
    report = lsuv_init(model, x, tol=0.05)
    assert list(report) == ["outer_a", "inner_a", "inner_b", "outer_head"]  # forward order, nested included
    for layer in linear_layers(model):
        # Measured before each layer's own activation, as the paper's "output of the layer".
        assert abs(layer_output(model, layer, x).var() - 1) < 0.05, layer.name
    assert model.get_layer("inner").get_layer("inner_b").activation is keras.activations.relu  # restored


def test_lsuv_on_a_cnn_with_batch_norm_and_its_limits():
    model = create_model("cnn", (8, 8, 1), 10, filters=[8, 16], initializer="lsuv")
    x = np.random.default_rng(1).uniform(0, 16, (128, 8, 8, 1)).astype("float32")
    report = lsuv_init(model, x, max_iter=10)
    assert all(abs(r["variance"] - 1) < 0.1 for r in report.values())
    assert all(r["iterations"] <= 10 for r in report.values())
    with pytest.raises(ValueError, match="tol=0"):
        lsuv_init(model, x, tol=0)
    with pytest.raises(UserError, match="no Dense or Conv"):
        lsuv_init(keras.Sequential([keras.Input((3,)), keras.layers.Activation("relu")]), x[:, 0, 0, :3])


def test_recipe_initializer_lsuv_runs_lsuv_after_building():
    from kzoo.data import load_arrays
    from kzoo.recipes import load
    from kzoo.train import build_model

    recipe = load("mlp-digits", ["model.initializer=lsuv", "model.depth=4", "model.width=32"])
    arrays = load_arrays("digits")
    model = build_model(recipe, arrays)
    batch = arrays.x_train[:256].astype("float32")
    for layer in linear_layers(model):
        assert abs(layer_output(model, layer, batch).var() - 1) < 0.1, layer.name
    plain = build_model(load("mlp-digits", ["model.depth=4", "model.width=32"]), arrays)
    head = plain.get_layer("head_dense")
    assert abs(layer_output(plain, head, batch).var() - 1) > 0.1  # without lsuv the head is not rescaled
