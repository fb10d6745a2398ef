"""Every registered model builds at a tiny input, trains one step, and saves and loads.

One parametrized test over `list_models()` (the timm pattern): a model registered later is
covered without writing a test for it.
"""

import keras
import numpy as np
import pytest

import kzoo  # noqa: F401  (registers the models)
from kzoo.finetune import model_structure
from kzoo.zoo import create_model, list_models

# Slow here: the deep CIFAR ResNets (per-layer overhead; resnet20/32 run the same builder by default)
# and the full-width ImageNet-style ones (100-300 MB to save; a narrow variant runs by default).
SLOW = {"resnet44", "resnet56", "resnet110", "resnet34", "resnet50"}
BIG = {"resnet34", "resnet50"}
INPUT = (16, 16, 3)
CLASSES = 3


def _check(model, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4,) + INPUT).astype("float32")
    y = np.array([0, 1, 2, 1])
    out = model(x, training=False)
    assert tuple(out.shape) == (4, CLASSES)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)

    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    assert any(np.any(np.asarray(g)) for g in grads)

    reference = np.asarray(model(x, training=False))  # the training pass moved the BN statistics
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), reference, rtol=1e-5, atol=1e-6)
    structure = model_structure(loaded)
    assert structure.head and structure.stages
    assert structure.names() == model_structure(model).names()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()])
def test_model_builds_trains_and_round_trips(name, tmp_path):
    _check(create_model(name, INPUT, CLASSES), tmp_path)


@pytest.mark.parametrize("name", sorted(BIG & set(list_models())))
def test_big_model_narrow_variant(name, tmp_path):
    _check(create_model(name, INPUT, CLASSES, width=0.125), tmp_path)
