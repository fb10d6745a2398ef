"""What the custom layers compute, checked against plain numpy references."""

import keras
import numpy as np
import pytest

from kzoo.zoo.layers import Maxout, MCDropout, RReLU, StochasticDepth, mc_predict


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_maxout_is_the_max_over_groups_of_consecutive_features():
    x = _x(5, 12)
    y = np.asarray(Maxout(num_pieces=3)(x))
    assert y.shape == (5, 4)
    np.testing.assert_allclose(y, x.reshape(5, 4, 3).max(axis=-1))


def test_maxout_on_conv_features_keeps_the_spatial_axes():
    x = _x(2, 3, 3, 8)
    y = np.asarray(Maxout(num_pieces=2)(x))
    np.testing.assert_allclose(y, x.reshape(2, 3, 3, 4, 2).max(axis=-1))


@pytest.mark.parametrize("kwargs", [{"num_pieces": 0}, {"num_pieces": 1.5}, {"axis": "last"}])
def test_maxout_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Received"):
        Maxout(**kwargs)


def test_maxout_rejects_features_not_divisible_by_pieces():
    with pytest.raises(ValueError, match="num_pieces=4"):
        Maxout(num_pieces=4)(_x(2, 6))


def test_rrelu_uses_the_mean_leak_at_inference():
    x = _x(4, 50)
    y = np.asarray(RReLU(lower=0.1, upper=0.3)(x))
    np.testing.assert_allclose(y, np.where(x >= 0, x, 0.2 * x), rtol=1e-6)


def test_rrelu_draws_a_leak_per_element_in_training():
    x = -np.abs(_x(64, 64)) - 0.1
    y = np.asarray(RReLU(lower=0.1, upper=0.3, seed=3)(x, training=True))
    leak = y / x
    assert leak.min() >= 0.1 - 1e-6 and leak.max() <= 0.3 + 1e-6
    assert leak.std() > 0.05  # U(0.1, 0.3) has std 0.058; one shared leak would give 0
    assert abs(leak.mean() - 0.2) < 0.01
    positive = np.abs(x)
    np.testing.assert_array_equal(np.asarray(RReLU(seed=3)(positive, training=True)), positive)


def test_rrelu_rejects_lower_above_upper():
    with pytest.raises(ValueError, match="lower=0.5"):
        RReLU(lower=0.5, upper=0.2)


def test_mc_dropout_stays_on_at_inference_and_keeps_the_expectation():
    x = np.ones((2000, 10), "float32")
    layer = MCDropout(0.25, seed=1)
    a, b = np.asarray(layer(x)), np.asarray(layer(x))
    assert not np.array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.02
    assert abs(a.mean() - 1.0) < 0.03


def test_mc_predict_reports_spread_only_with_mc_dropout():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    mc = keras.Model(inputs, keras.layers.Dense(3)(MCDropout(0.5, seed=0)(hidden)))
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dropout(0.5, seed=0)(hidden)))
    x = _x(8, 6)
    mean, std = mc_predict(mc, x, samples=5)
    assert mean.shape == std.shape == (8, 3) and std.min() > 1e-3
    _, plain_std = mc_predict(plain, x, samples=3)
    assert plain_std.max() < 1e-6  # plain Dropout is off at inference: identical predictions


def test_stochastic_depth_drops_whole_branches_per_example():
    shortcut, branch = _x(400, 5), np.ones((400, 5), "float32")
    layer = StochasticDepth(0.25, seed=2)
    np.testing.assert_allclose(np.asarray(layer([shortcut, branch])), shortcut + branch)
    y = np.asarray(layer([shortcut, branch], training=True)) - shortcut
    kept = np.isclose(y, 1 / 0.75).all(axis=1)
    dropped = np.isclose(y, 0.0, atol=1e-6).all(axis=1)
    assert (kept | dropped).all()  # each example keeps or drops its whole branch
    assert abs(dropped.mean() - 0.25) < 0.07


def test_stochastic_depth_needs_two_inputs():
    with pytest.raises(ValueError, match="shortcut, branch"):
        StochasticDepth(0.1)(_x(2, 3))
    with pytest.raises(ValueError, match="rate=1"):
        StochasticDepth(1)
