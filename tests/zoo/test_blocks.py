"""Activations, initializers, normalizations and regularizers by name, as recipes reach them."""

import keras
import numpy as np
import pytest

from kzoo.errors import RecipeError, UserError
from kzoo.zoo import activations, create_model, initializers, norms
from kzoo.zoo.layers import Maxout, MCDropout, RReLU


def test_the_lectures_activations_are_all_listed():
    lectured = {"sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish", "softplus",
                "maxout", "rrelu"}
    assert lectured <= set(activations.list_activations())


def test_activation_get_builds_custom_layers_from_tables_and_falls_back_to_keras():
    assert isinstance(activations.get({"name": "maxout", "num_pieces": 3}), Maxout)
    layer = activations.get({"name": "rrelu", "lower": 0.05, "upper": 0.2})
    assert isinstance(layer, RReLU) and (layer.lower, layer.upper) == (0.05, 0.2)
    fallback = activations.get("hard_sigmoid", name="x")  # Keras has it, kzoo does not register it
    assert isinstance(fallback, keras.layers.Activation) and fallback.name == "x"
    with pytest.raises(UserError, match="relu"):
        activations.get("reluu")


@pytest.mark.parametrize("name, variance", [
    ("glorot_normal", 2 / (400 + 200)), ("glorot_uniform", 2 / (400 + 200)),
    ("he_normal", 2 / 400), ("he_uniform", 2 / 400),
    ("lecun_normal", 1 / 400), ("lecun_uniform", 1 / 400),
    ("small_normal", 1e-4),
])
def test_initializers_have_the_variance_of_their_formula(name, variance):
    w = np.asarray(initializers.get(name, seed=1)((400, 200)))
    assert abs(w.var() / variance - 1) < 0.05
    assert abs(w.mean()) < 0.05 * np.sqrt(variance)


def test_orthogonal_and_lsuv_start_orthonormal():
    for name in ("orthogonal", "lsuv"):
        w = np.asarray(initializers.get(name, seed=1)((64, 64)))
        np.testing.assert_allclose(w.T @ w, np.eye(64), atol=1e-4)


def test_initializer_get_falls_back_to_keras_and_names_the_closest():
    assert isinstance(initializers.get("variance_scaling"), keras.initializers.VarianceScaling)
    with pytest.raises(UserError, match="he_normal"):
        initializers.get("he_norml")


@pytest.mark.parametrize("name, cls", [("batch", keras.layers.BatchNormalization),
                                       ("layer", keras.layers.LayerNormalization),
                                       ("instance", keras.layers.GroupNormalization),
                                       ("group", keras.layers.GroupNormalization)])
@pytest.mark.parametrize("position", ["before", "after"])
def test_every_norm_sits_before_or_after_the_activation(name, cls, position):
    model = create_model("cnn", (8, 8, 1), 10, filters=[8], convs_per_stage=1, normalization=name,
                         norm_position=position)
    names = [layer.name for layer in model.layers]
    norm, act = names.index("stage0_block0_norm"), names.index("stage0_block0_act")
    assert isinstance(model.get_layer("stage0_block0_norm"), cls)
    assert (norm < act) == (position == "before")
    assert norms.get("none") is None


def test_instance_norm_on_dense_features_is_refused():
    with pytest.raises(ValueError, match="normalization='instance'"):
        create_model("mlp", (8, 8, 1), 10, normalization="instance")
    with pytest.raises(RecipeError, match="Instance normalization"):
        from kzoo.data import load_arrays
        from kzoo.recipes import load
        from kzoo.train import build_model

        build_model(load("mlp-digits", ["model.normalization=instance"]), load_arrays("digits"))


def test_maxout_units_keep_their_width():
    model = create_model("mlp", (8, 8, 1), 10, depth=2, width=16, activation={"name": "maxout", "num_pieces": 3})
    assert model.get_layer("stage0_block0_dense").units == 48
    assert model.get_layer("stage0_block0_act").output.shape[-1] == 16
    conv = create_model("cnn", (8, 8, 1), 10, filters=[4], convs_per_stage=1, activation="maxout")
    assert conv.get_layer("stage0_block0_conv").filters == 8
    assert conv.get_layer("stage0_block0_act").output.shape[-1] == 4


def test_max_norm_bounds_every_unit_after_training():
    model = create_model("mlp", (8, 8, 1), 10, depth=1, width=16, max_norm=0.5, normalization="none")
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 1)).astype("float32") * 5
    model.fit(x, np.arange(64) % 10, epochs=1, batch_size=16, verbose=0)
    for name in ("stage0_block0_dense", "head_dense"):
        norms_ = np.linalg.norm(np.asarray(model.get_layer(name).kernel), axis=0)
        assert norms_.max() <= 0.5 + 1e-5


def test_gaussian_noise_only_in_training():
    model = create_model("mlp", (8, 8, 1), 10, depth=1, width=8, gaussian_noise=0.5)
    noise = model.get_layer("stem_noise")
    x = np.zeros((4, 8, 8, 1), "float32")
    np.testing.assert_array_equal(np.asarray(noise(x)), x)
    assert np.asarray(noise(x, training=True)).std() > 0.3


def test_mc_dropout_option_and_its_validation():
    model = create_model("cnn", (8, 8, 1), 10, filters=[4], dropout=0.3, mc_dropout=True)
    assert isinstance(model.get_layer("head_dropout"), MCDropout)
    mlp = create_model("mlp", (8, 8, 1), 10, depth=2, width=8, dropout=0.2, mc_dropout=True)
    assert isinstance(mlp.get_layer("stage1_block0_dropout"), MCDropout)
    with pytest.raises(ValueError, match="dropout=0.0"):
        create_model("mlp", (8, 8, 1), 10, mc_dropout=True)


def test_every_block_is_a_recipe_field():
    from kzoo.recipes import load

    recipe = load("mlp-digits", [
        'model.activation={name="rrelu", lower=0.1, upper=0.3}', "model.initializer=lsuv",
        "model.normalization=group", "model.norm_position=after", "model.l1=0.0001", "model.l2=0.0001",
        "model.max_norm=3.0", "model.gaussian_noise=0.1", "model.mc_dropout=true", "model.dropout=0.2",
    ])
    assert recipe.model["activation"] == {"name": "rrelu", "lower": 0.1, "upper": 0.3}
    assert recipe.model["max_norm"] == 3.0 and recipe.model["mc_dropout"] is True
    assert load("mlp-digits", ["model.activation=hard_sigmoid"]).model["activation"] == "hard_sigmoid"
    with pytest.raises(RecipeError, match="maxout"):
        load("mlp-digits", ["model.activation=maxot"])
    with pytest.raises(RecipeError, match="max_norm"):
        load("cnn-digits", ["model.max_norm=big"])


def test_same_shaped_layers_start_different_and_drop_different_units():
    """One model seed must not give every layer the same initial weights or dropout masks."""
    import numpy as np

    from kzoo.zoo import create_model

    model = create_model("mlp", (8, 8, 1), 10, depth=3, width=32, dropout=0.5, seed=0)
    k1 = model.get_layer("stage1_block0_dense").kernel.numpy()
    k2 = model.get_layer("stage2_block0_dense").kernel.numpy()
    assert k1.shape == k2.shape and not np.allclose(k1, k2)
    ones = np.ones((4, 32), "float32")
    m1 = model.get_layer("stage1_block0_dropout")(ones, training=True).numpy()
    m2 = model.get_layer("stage2_block0_dropout")(ones, training=True).numpy()
    assert not np.array_equal(m1 == 0, m2 == 0)
    again = create_model("mlp", (8, 8, 1), 10, depth=3, width=32, dropout=0.5, seed=0)
    np.testing.assert_array_equal(again.get_layer("stage1_block0_dense").kernel.numpy(), k1)
