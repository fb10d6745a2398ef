"""fold_batchnorm: fewer layers, the same inference outputs, a normal saveable model."""

import keras
import numpy as np
import pytest

from kzoo.errors import UserError
from kzoo.testing import randomize_batchnorm
from kzoo.zoo import create_model, fold_batchnorm


def _assert_same(a, b):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def _bn_count(model):
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())


X = np.random.default_rng(0).standard_normal((32, 8, 8, 1)).astype("float32")


@pytest.mark.parametrize("name, kwargs", [("cnn", {"filters": [8, 16]}), ("mlp", {"depth": 3, "width": 32})])
def test_folded_model_matches_in_inference_and_saves(name, kwargs, tmp_path):
    model = randomize_batchnorm(create_model(name, (8, 8, 1), 10, **kwargs))
    folded = fold_batchnorm(model)
    assert _bn_count(model) > 0 and _bn_count(folded) == 0
    assert len(folded.layers) == len(model.layers) - _bn_count(model)
    logits = lambda m: keras.Model(m.inputs, m.get_layer("head_dense").input)  # before the softmax  # noqa: E731
    _assert_same(logits(model).predict(X, verbose=0), logits(folded).predict(X, verbose=0))
    _assert_same(model.predict(X, verbose=0), folded.predict(X, verbose=0))
    folded.save(tmp_path / "folded.keras")
    _assert_same(model.predict(X, verbose=0), keras.models.load_model(tmp_path / "folded.keras").predict(X, verbose=0))
    assert _bn_count(model) > 0  # the original is untouched
    assert folded.kzoo_structure == model.kzoo_structure


def test_bn_after_the_activation_is_left_in_place():
    model = randomize_batchnorm(create_model("cnn", (8, 8, 1), 10, filters=[8], norm_position="after"))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == _bn_count(model)
    _assert_same(model.predict(X, verbose=0), folded.predict(X, verbose=0))


def test_conv_feeding_two_layers_is_not_folded_and_nested_sequential_is():
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="shared_conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn_a")(conv)
    x = keras.layers.Add()([bn, conv])  # conv's output also bypasses the BN: folding would change it
    block = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
                              keras.layers.BatchNormalization(), keras.layers.ReLU()], name="block")
    y = keras.layers.Flatten()(block(x))
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.Dense(3)(y)))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 1 and "bn_a" in [layer.name for layer in folded.layers]
    x_ = np.random.default_rng(1).standard_normal((4, 6, 6, 2)).astype("float32")
    _assert_same(model.predict(x_, verbose=0), folded.predict(x_, verbose=0))


def test_subclassed_models_are_refused():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(UserError, match="subclassed"):
        fold_batchnorm(Sub())
