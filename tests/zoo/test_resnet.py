"""ResNets: published parameter counts, the naming pattern transfer relies on, and each option."""

import re

import keras
import numpy as np
import pytest

import kzoo  # noqa: F401  (registers the models and layers)
from kzoo.finetune import model_structure
from kzoo.zoo import create_model
from kzoo.zoo.layers import StochasticDepth
from kzoo.zoo.resnet import PadShortcut


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name, paper", [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)])
def test_cifar_parameter_counts_match_the_paper(name, paper):
    # He et al. 2016, Table 6 (option A shortcuts): 0.27M, 0.85M, 1.7M.
    model = create_model(name, (32, 32, 3), 10)
    assert abs(trainable_params(model) - paper) / paper < 0.02


def test_preactivation_resnet20_has_the_same_parameter_count():
    v2 = create_model("resnet20", (32, 32, 3), 10, version=2)
    assert abs(trainable_params(v2) - 0.27e6) / 0.27e6 < 0.02
    names = [layer.name for layer in v2.layers]
    assert "stage0_block0_pre_norm" in names and "stage2_post_norm" in names
    assert not any(n.endswith("_out_act") for n in names)  # v2 adds without activating after


def test_resnet50_parameter_count_equals_keras_applications():
    ours = create_model("resnet50", (32, 32, 3), 10)
    reference = keras.applications.ResNet50(weights=None, classes=10, input_shape=(32, 32, 3))
    assert ours.count_params() == reference.count_params()


@pytest.mark.parametrize("name, stages", [("resnet20", 3), ("resnet18", 4)])
def test_layer_names_follow_stem_stage_block_head(name, stages):
    model = create_model(name, (32, 32, 3), 10, width=0.25)
    pattern = re.compile(r"^(input|stem_\w+|stage(\d+)_(block\d+|post)_\w+|head_\w+)$")
    for layer in model.layers:
        assert pattern.match(layer.name), layer.name
    structure = model_structure(model)
    assert len(structure.stages) == stages
    assert {lyr.name.split("_")[0] for lyr in structure.stages[-1]} == {f"stage{stages - 1}"}
    assert structure.head[-1].name == "head_dense"
    assert model.get_layer("head_dense").units == 10


def test_identity_shortcuts_pad_and_projection_shortcuts_convolve():
    a = create_model("resnet20", (16, 16, 3), 10, shortcut="identity")
    b = create_model("resnet20", (16, 16, 3), 10, shortcut="projection")
    pads = [lyr for lyr in a.layers if isinstance(lyr, PadShortcut)]
    convs = [lyr.name for lyr in b.layers if lyr.name.endswith("shortcut_conv")]
    # The two stages that double the channels and halve the resolution start with a shortcut that changes shape.
    assert [lyr.name for lyr in pads] == ["stage1_block0_shortcut_pad", "stage2_block0_shortcut_pad"]
    assert convs == ["stage1_block0_shortcut_conv", "stage2_block0_shortcut_conv"]
    assert b.count_params() > a.count_params()
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16)).astype("float32")
    y = np.asarray(PadShortcut(32, 2)(x))
    assert y.shape == (2, 8, 8, 32)
    np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
    assert not y[..., :8].any() and not y[..., 24:].any()


@pytest.mark.parametrize("version", [1, 2])
def test_zero_init_residual_makes_each_block_start_as_its_shortcut(version):
    model = create_model("resnet20", (8, 8, 1), 10, version=version, zero_init_residual=True, width=0.5)
    last = "stage0_block0_norm2" if version == 1 else "stage0_block0_conv2"
    weights = model.get_layer(last).get_weights()
    assert not np.any(weights[0])  # gamma (v1) or kernel (v2) is zero
    probe = keras.Model(model.input, [model.get_layer("stage0_block0_add").input[0],
                                       model.get_layer("stage0_block0_add").output])
    shortcut, added = probe(np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32"))
    np.testing.assert_allclose(np.asarray(added), np.asarray(shortcut), atol=1e-6)
    plain = create_model("resnet20", (8, 8, 1), 10, version=version, width=0.5)
    assert np.any(plain.get_layer(last).get_weights()[0])


def test_stochastic_depth_drops_whole_examples_in_training_only():
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((2000, 3), "float32")
    shortcut = np.zeros_like(x)
    np.testing.assert_array_equal(np.asarray(layer([shortcut, x], training=False)), x)
    y = np.asarray(layer([shortcut, x], training=True))
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert np.all(y.min(axis=1) == y.max(axis=1))  # an example keeps or drops its whole branch
    assert 0.45 < (y[:, 0] == 0).mean() < 0.55
    model = create_model("resnet20", (8, 8, 1), 10, stochastic_depth=0.2, width=0.25)
    rates = [lyr.rate for lyr in model.layers if isinstance(lyr, StochasticDepth)]
    assert len(rates) == 9 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2)  # linear in depth


def test_width_multiplier_activation_norm_and_initializer_are_applied():
    model = create_model("resnet20", (8, 8, 1), 10, width=0.5, activation="gelu", normalization="group",
                         initializer="orthogonal")
    assert model.get_layer("stem_conv").filters == 8
    assert model.get_layer("stage2_block2_conv2").filters == 32
    assert isinstance(model.get_layer("stage0_block0_norm1"), keras.layers.GroupNormalization)
    assert model.get_layer("stage0_block0_act1").get_config()["activation"] == "gelu"
    assert isinstance(model.get_layer("stem_conv").kernel_initializer, keras.initializers.Orthogonal)


def test_equal_shaped_layers_get_different_initial_weights():
    model = create_model("resnet20", (8, 8, 1), 10, width=0.25)
    a = model.get_layer("stage0_block0_conv2").get_weights()[0]
    b = model.get_layer("stage0_block1_conv2").get_weights()[0]
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("kwargs, bad", [({"depth": 21}, "depth=21"), ({"version": 3}, "version=3"),
                                         ({"shortcut": "dense"}, "shortcut='dense'"),
                                         ({"stochastic_depth": 1.0}, "stochastic_depth=1.0")])
def test_bad_arguments_name_the_value(kwargs, bad):
    with pytest.raises(ValueError, match=re.escape(f"Received: {bad}")):
        create_model("resnet20", (8, 8, 1), 10, **kwargs)


def test_structure_and_custom_layers_survive_save_and_load(tmp_path):
    model = create_model("resnet20", (8, 8, 1), 10, width=0.25, stochastic_depth=0.1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not hasattr(loaded, "kzoo_structure")  # the attribute is gone: names carry the structure
    assert model_structure(loaded).names() == model_structure(model).names()
    recorded = model.kzoo_structure
    derived = model_structure(loaded)
    for prefixes, layers in zip(recorded["stages"], derived.stages):
        assert all(lyr.name.startswith(tuple(prefixes)) for lyr in layers)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_resnet20_cifar10_recipe_runs_on_mock_data(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from kzoo.data import sources
    from kzoo.recipes import load, run

    # kzoo's offline guard probes the download host; mock_data serves the examples without it.
    monkeypatch.setattr(sources, "can_download", lambda builder, timeout=3.0: True)
    recipe = load("resnet20-cifar10", ["epochs=1", "data.batch_size=16", "model.width=0.25"])
    assert recipe.optimizer.name == "sgd" and recipe.optimizer.momentum == 0.9 and recipe.optimizer.lr == 0.1
    assert recipe.schedule["boundaries"] == [91, 136] and load("resnet20-cifar10").epochs == 182
    with tfds.testing.mock_data(num_examples=32):
        result = run(recipe, out=str(tmp_path / "r"), verbose=0)
    assert result.metrics["epochs_run"] == 1
    assert result.model.input_shape[1:] == (32, 32, 3)
    assert [lyr.name for lyr in result.model.layers[1:3]] == ["augment_crop", "augment_flip"]
