"""Fixup: deep residual networks without normalization that do not explode at initialization."""

import numpy as np
import pytest


def _feature_variance(model, x):
    """Variance of the pooled features the classifier sees (the head starts at zero in Fixup)."""
    import keras

    features = keras.Model(model.input, model.get_layer("head_pool").output)
    return float(np.var(keras.ops.convert_to_numpy(features(x))))


def test_fixup_resnet110_output_variance_stays_finite_while_he_init_twin_explodes():
    from kzoo.zoo import create_model

    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    fixup20 = _feature_variance(create_model("fixup_resnet20", (16, 16, 3), 10), x)
    fixup110 = _feature_variance(create_model("fixup_resnet110", (16, 16, 3), 10), x)
    plain110 = _feature_variance(create_model("nonorm_resnet110", (16, 16, 3), 10), x)
    assert np.isfinite(fixup110) and 0.01 < fixup110 < 10.0
    assert fixup110 < 2 * fixup20  # depth does not grow the variance
    assert not np.isfinite(plain110) or plain110 > 1e6 * fixup110


def test_fixup_rule_initializes_branches_and_head():
    from kzoo.zoo import create_model
    from kzoo.zoo.fixup import fixup_scale

    model = create_model("fixup_resnet20", (8, 8, 1), 10)
    conv2 = [layer for layer in model.layers if layer.name.endswith("_conv2")]
    assert len(conv2) == 9 and all(not np.any(layer.get_weights()[0]) for layer in conv2)
    assert not np.any(model.get_layer("head_dense").get_weights()[0])
    assert not any("norm" in layer.name or "batch_normalization" in layer.name for layer in model.layers)
    kernel = model.get_layer("stage1_block1_conv1").get_weights()[0]  # 3x3x32x32, fan_in 288
    he_std = np.sqrt(2.0 / (3 * 3 * 32))
    assert fixup_scale(9) == pytest.approx(1 / 3)
    assert np.std(kernel) == pytest.approx(he_std / 3, rel=0.05)
    plain = create_model("nonorm_resnet20", (8, 8, 1), 10).get_layer("stage1_block1_conv1").get_weights()[0]
    assert np.std(plain) == pytest.approx(he_std, rel=0.05)
    assert model.kzoo_structure["stages"] == [["stage0_"], ["stage1_"], ["stage2_"]]


def test_scalar_layers_save_and_load(tmp_path):
    import keras

    from kzoo.zoo.layers import ScalarBias, ScalarMultiplier

    inputs = keras.Input((3,))
    outputs = ScalarBias(0.5, name="b")(ScalarMultiplier(2.0, name="s")(inputs))
    model = keras.Model(inputs, outputs)
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(model(x), 2.0 * x + 0.5)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(x), 2.0 * x + 0.5)
    assert reloaded.get_layer("s").get_config()["initial_value"] == 2.0
    assert len(reloaded.get_layer("b").trainable_weights) == 1
    with pytest.raises(ValueError, match="initial_value='x'"):
        ScalarBias("x")


def test_scalar_lr_multiplier_scales_the_sgd_step():
    import keras

    from kzoo.zoo.layers import ScalarBias

    steps = {}
    for multiplier in (1.0, 0.1):
        layer = ScalarBias(0.3, lr_multiplier=multiplier)
        model = keras.Sequential([keras.Input((2,)), layer])
        model.compile(keras.optimizers.SGD(0.01), loss=lambda y, p: keras.ops.sum(p))
        x = np.zeros((1, 2), "float32")
        assert float(model(x)[0, 0]) == pytest.approx(0.3)
        model.train_on_batch(x, x)
        steps[multiplier] = float(model(x)[0, 0]) - 0.3
    assert steps[1.0] == pytest.approx(-0.02, rel=1e-4)  # d(sum)/db = 2 elements
    assert steps[0.1] == pytest.approx(0.1 * steps[1.0], rel=1e-4)
    assert ScalarBias(lr_multiplier=0.1).get_config()["lr_multiplier"] == 0.1


def test_fixup_digits_recipe_trains(tmp_path, cli):
    import kzoo

    code, out, _ = cli("list", "models")
    assert code == 0 and "fixup_resnet110" in out and "nonorm_resnet110" in out
    recipe = kzoo.recipes.load("fixup-digits", ["epochs=3", "model.blocks_per_stage=1", "model.filters=[8, 16]",
                                              "optimizer.name=adam", "optimizer.lr=0.01"])
    result = kzoo.recipes.run(recipe, out=str(tmp_path / "r"), verbose=0)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.metrics["test_accuracy"] > 0.25  # 0.40 measured after 3 epochs; chance is 0.1
    with pytest.raises(kzoo.RecipeError, match="init='bn'"):
        kzoo.recipes.run(kzoo.recipes.load("fixup-digits", ["model.init=bn"]), out=str(tmp_path / "bad"))


@pytest.mark.slow
def test_fixup_resnet20_trains_on_mnist5k_within_a_point_of_batchnorm(tmp_path):
    """The shipped comparison: `fixup-mnist5k` and the same recipe with the BN `resnet20` (same
    data, augmentation, optimizer and schedule), for seeds 0, 1 and 2. One seed's gap moves by
    about a point from seed to seed (the BN net alone ranges over 0.977-0.987 on these 1,000
    test images), so the claim is about the mean. About 15 minutes on 2 CPU cores."""
    import keras

    import kzoo

    norms = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)
    accuracy = {"fixup": [], "bn": []}
    for seed in (0, 1, 2):
        for kind, sets in (("fixup", []), ("bn", ["model.name='resnet20'"])):
            recipe = kzoo.recipes.load("fixup-mnist5k", [f"seed={seed}"] + sets)
            result = kzoo.recipes.run(recipe, out=str(tmp_path / f"{kind}{seed}"), verbose=0)
            assert any(isinstance(layer, norms) for layer in result.model.layers) == (kind == "bn")
            accuracy[kind].append(result.metrics["test_accuracy"])
    print(accuracy)
    assert min(accuracy["fixup"]) > 0.96
    assert round(np.mean(accuracy["bn"]) - np.mean(accuracy["fixup"]), 4) <= 0.01  # within a point
