"""KerasHub backbones (`hub:PRESET_OR_DIR`): a small ResNet with random weights saved as a local
preset is fine-tuned in stages on digits; named presets offline, the missing extra and unknown
names are one line, exit 2.

The tests that need keras-hub skip without the `hub` extra; CI installs it and sets
KZOO_REQUIRE_HUB=1, so there they fail instead of skipping.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

STAGES = "head:1@1e-3, all:2@1e-3"


@pytest.fixture(scope="module")
def keras_hub():
    if os.environ.get("KZOO_REQUIRE_HUB"):
        import keras_hub

        return keras_hub
    return pytest.importorskip("keras_hub")


@pytest.fixture(scope="module")
def preset(keras_hub, tmp_path_factory):
    """A local preset folder: a two-stack basic-block ResNet (89k weights, random) and an image
    converter that resizes to 16x16 and scales to [0, 1]."""
    import keras

    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    folder = tmp_path_factory.mktemp("hub") / "tiny_resnet"
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ResNetImageConverter(image_size=(16, 16), scale=1 / 255).save_to_preset(str(folder))
    return folder


def _kzoo(*args):
    return [sys.executable, "-m", "kzoo", *[str(a) for a in args]]


def _finetune_args(preset, out, stages=STAGES):
    return ("finetune", "--backbone", f"hub:{preset}", "--data", "digits", "--labels-per-class", 20,
            "--stages", stages, "--out", out, "--quiet")


def _backbone(model):
    from kzoo.zoo.hub import hub_family

    (inner,) = [lyr for lyr in model.layers if hub_family(lyr) is not None]
    return inner


def _by_layer(backbone):
    return {lyr.name: lyr.get_weights() for lyr in backbone.layers if lyr.weights}


def _changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def uninterrupted(preset, tmp_path_factory):
    """The run directory of `kzoo finetune --backbone hub:<preset>` with STAGES, run through."""
    from kzoo.cli import main

    out = tmp_path_factory.mktemp("hub_runs") / "uninterrupted"
    assert main([str(a) for a in _finetune_args(preset, out)]) == 0
    return out


def test_first_stage_keeps_the_backbone_and_the_second_trains_it(keras_hub, preset, uninterrupted, tmp_path, cli):
    import keras

    from kzoo.finetune import model_structure

    expected = _by_layer(keras_hub.models.Backbone.from_preset(str(preset)))
    code, out, err = cli(*_finetune_args(preset, tmp_path / "head", "head:1@1e-3"))
    assert code == 0, err
    head_only = keras.models.load_model(tmp_path / "head" / "model.keras", compile=False)
    kept = _by_layer(_backbone(head_only))
    assert kept.keys() == expected.keys() and len(kept) == 12  # 6 convolutions, 6 BatchNormalizations
    assert not any(_changed(kept[name], expected[name]) for name in expected)  # BN statistics too
    assert _changed(head_only.get_layer("head_dense").get_weights(),
                    keras.models.load_model(uninterrupted / "model.keras", compile=False)
                    .get_layer("head_dense").get_weights())

    both = keras.models.load_model(uninterrupted / "model.keras", compile=False)
    trained = _by_layer(_backbone(both))
    # `all` trains every convolution; BatchNormalization stays frozen (finetune.train_bn = false).
    assert {name for name in expected if _changed(trained[name], expected[name])} == {
        name for name in expected if name.endswith("_conv")}
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["stages"] == ["head:1@0.001", "all:2@0.001"] and metrics["stage_boundaries"] == [1]

    # The groups come from KerasHub's layer names, and survive save / load.
    names = model_structure(both).names()
    assert names["stem"][:3] == ["conv1_pad", "conv1_conv", "conv1_bn"] and "pool1_pool" in names["stem"]
    assert [{n.split("_")[0] for n in stage} for stage in names["stages"]] == [{"stack0"}, {"stack1"}]
    assert names["head"] == ["head_pool", "head_dense"]


def test_structure_and_per_group_rates_reach_the_nested_backbone(preset):
    from kzoo.data import load_arrays
    from kzoo.finetune import freeze, model_structure, parse_stages
    from kzoo.recipes.schema import build_recipe
    from kzoo.train import build_finetune_model, group_multipliers

    recipe = build_recipe({"finetune": {"stages": "top1:1@1e-3", "backbone": f"hub:{preset}"}})
    model = build_finetune_model(recipe, load_arrays("digits"))
    assert model.get_layer("preprocess_hub_converter").image_size == (16, 16)  # the preset's own converter
    structure = model_structure(model)
    inner = _backbone(model)
    grouped = {lyr.name for _, layers in structure.groups() for lyr in layers}
    assert all(lyr.name in grouped for lyr in inner.layers if lyr.weights)
    assert freeze(model, structure, 2) == ["head", "stage1"]
    trainable = {lyr.name for lyr in inner.layers if lyr.trainable and lyr.weights}
    assert trainable and all(n.startswith("stack1_") and not n.endswith("_bn") for n in trainable)
    (stage,) = parse_stages("all:1@1e-4..1e-2")
    multipliers = group_multipliers(structure, stage.rates(len(structure.stages)))
    assert multipliers["conv1_conv"] == pytest.approx(0.01) and multipliers["stack1_block0_1_conv"] < 1


@pytest.mark.slow
def test_sigkilled_hub_finetune_resumes_inside_its_stage_and_equals_the_uninterrupted_run(preset, uninterrupted,
                                                                                          tmp_path):
    from kzoo.runs import BACKUP, latest_snapshot

    killed = tmp_path / "killed"
    args = _finetune_args(preset, killed)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(_kzoo(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            names = os.listdir(killed / BACKUP) if (killed / BACKUP).is_dir() else []
            # A finished checkpoint's folder is named epoch-NNNN; wait for one inside stage 2.
            if any(n[6:].isdigit() and int(n[6:]) >= 2 for n in names if n.startswith("epoch-")):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "metrics.json").exists()
    assert latest_snapshot(str(killed / BACKUP)).epoch == 2

    resumed = subprocess.run(_kzoo(*args[:-1]), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming stage 2/2 after epoch 2 of 3" in resumed.stdout
    metrics, expected = (json.loads((d / "metrics.json").read_text()) for d in (killed, uninterrupted))
    assert metrics["resumed_after_epoch"] == 2
    for key in ("test_accuracy", "test_loss", "stage_boundaries", "params"):
        assert metrics[key] == expected[key], key
    assert (killed / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    from kzoo.safe_load import load_model

    for a, b in zip(load_model(str(killed / "model.keras")).get_weights(),
                    load_model(str(uninterrupted / "model.keras")).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_named_preset_offline_is_one_line_within_seconds(keras_hub, cli, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)  # whatever this machine can reach
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))  # nothing cached
    began = time.monotonic()
    code, out, err = cli("finetune", "--backbone", "hub:resnet_18_imagenet", "--data", "digits",
                         "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert "Cannot download the KerasHub preset 'resnet_18_imagenet'" in err and "hub:DIR" in err
    assert time.monotonic() - began < 10
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spec, message", [
    ("hub:resnet_51_imagenet", "an unknown KerasHub preset. Did you mean: resnet_50_imagenet"),
    ("hub:bert_base_en", "not an image backbone of a family kzoo knows"),
    ("hub:./no/such/folder", "No such preset folder"),
    ("hub:", "hub: needs a KerasHub preset name or a preset folder"),
])
def test_bad_hub_specs_are_one_line(keras_hub, cli, tmp_path, spec, message):
    code, out, err = cli("finetune", "--backbone", spec, "--data", "digits", "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_preset_weights_come_with_the_preset(keras_hub, preset, cli, tmp_path):
    code, out, err = cli("finetune", "--backbone", f"hub:{preset}", "--data", "digits", "--weights", "imagenet",
                         "--out", tmp_path / "run", "--quiet")
    assert code == 2 and "A KerasHub preset brings its own weights; leave finetune.weights unset" in err
    assert not (tmp_path / "run").exists()


def test_without_the_extra_hub_is_one_line_naming_the_install(cli, tmp_path, monkeypatch):
    import kzoo.zoo.hub

    monkeypatch.setattr(kzoo.zoo.hub, "hub_installed", lambda: False)
    code, out, err = cli("finetune", "--backbone", "hub:resnet_50_imagenet", "--data", "digits",
                         "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "pip install 'kzoo[hub]'" in err, err
    code, out, err = cli("list", "backbones")
    assert code == 0 and "hub:" not in out


def test_list_backbones_shows_the_hub_families(keras_hub, cli):
    code, out, err = cli("list", "backbones")
    assert code == 0
    for name in ("hub:resnet_50_imagenet", "hub:densenet_121_imagenet", "hub:vgg_16_imagenet",
                 "hub:efficientnet_b0_ra_imagenet", "hub:mobilenet_v3_small_100_imagenet",
                 "hub:vit_base_patch16_224_imagenet"):
        assert f"\n{name} " in out
        assert name[4:] in keras_hub.models.Backbone.presets  # a preset name KerasHub really has
    assert "stack(\\d+)_" in out


@pytest.mark.parametrize("family, kwargs, stages", [
    ("ResNetBackbone", dict(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 8],
                            stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
                            use_pre_activation=True), ["stack0", "stack1", "stack2"]),
    ("DenseNetBackbone", dict(stackwise_num_repeats=[1, 1, 1], growth_rate=4), ["stack1", "stack2", "stack3"]),
    ("VGGBackbone", dict(stackwise_num_repeats=[1, 1, 1], stackwise_num_filters=[4, 4, 4]), ["block2", "block3"]),
    ("EfficientNetBackbone", "efficientnet", ["block1a", "block2a", "block3a"]),
    ("MobileNetBackbone", "mobilenet", ["block", "block", "block"]),
])
def test_every_family_table_groups_every_weighted_layer_into_ordered_stages(keras_hub, family, kwargs, stages):
    import keras

    from kzoo.finetune import model_structure

    backbone = _small_backbone(keras_hub, kwargs) if isinstance(kwargs, str) else getattr(keras_hub.models, family)(
        image_shape=(32, 32, 3), **kwargs)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head_dense")(x))
    structure = model_structure(model)
    assert [{n.split("_")[0] for n in s if n.startswith(("stack", "block"))} for s in structure.names()["stages"]] == [
        {name} for name in stages]
    grouped = {lyr.name for _, layers in structure.groups() for lyr in layers}
    assert all(lyr.name in grouped for lyr in backbone.layers if lyr.weights)
    assert structure.stem and all(s for s in structure.stages)


# ---------------------------------------------------------------- EfficientNet, MobileNet, ViT
def _small_backbone(keras_hub, kind, seed=1):
    """A randomly initialised KerasHub backbone of a family, small enough for a test (32x32 RGB)."""
    import keras

    keras.utils.set_random_seed(seed)
    m = keras_hub.models
    if kind == "efficientnet":
        return m.EfficientNetBackbone(
            stackwise_width_coefficients=[1.0] * 3, stackwise_depth_coefficients=[1.0] * 3,
            stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 1, 1], stackwise_input_filters=[8, 8, 16],
            stackwise_output_filters=[8, 16, 16], stackwise_expansion_ratios=[1, 2, 2],
            stackwise_squeeze_and_excite_ratios=[0, 0.25, 0.25], stackwise_strides=[1, 2, 2],
            stackwise_block_types=["v1"] * 3, stackwise_force_input_filters=[0] * 3, stackwise_nores_option=[False] * 3,
            input_shape=(32, 32, 3))  # num_features stays at its default: KerasHub 0.32 does not save it
    if kind == "mobilenet":
        return m.MobileNetBackbone(
            stackwise_expansion=[[16], [24]], stackwise_num_blocks=[1, 1], stackwise_num_filters=[[8], [8]],
            stackwise_kernel_size=[[3], [3]], stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [0.25]],
            stackwise_activation=[["relu"], ["hard_swish"]], stackwise_padding=[[1], [1]], output_num_filters=16,
            depthwise_filters=8, depthwise_stride=2, depthwise_residual=False, last_layer_filter=16,
            input_num_filters=8, image_shape=(32, 32, 3))
    return m.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=3, num_heads=2, hidden_dim=8, mlp_dim=16)


@pytest.fixture(scope="module")
def small_presets(keras_hub, tmp_path_factory):
    """`{family: local preset folder}` written by `save_to_preset` from random backbones."""
    out = {}
    for kind in ("efficientnet", "mobilenet", "vit"):
        folder = tmp_path_factory.mktemp("hub_small") / kind
        _small_backbone(keras_hub, kind).save_to_preset(str(folder))
        out[kind] = folder
    return out


def _finetune_once(preset, layer_decay=0.0, stages="all:1@0.1"):
    """The fine-tuning model of a local preset, compiled for one `stages` stage under plain SGD,
    its structure, and the variable values before and after one step on 8 digits."""
    from kzoo.data import load_arrays
    from kzoo.finetune import model_structure, parse_stages
    from kzoo.recipes.schema import build_recipe
    from kzoo.train import build_finetune_model, compile_stage

    recipe = build_recipe({"optimizer": {"name": "sgd", "momentum": 0.0}, "seed": 0,
                           "finetune": {"stages": stages, "backbone": f"hub:{preset}", "layer_decay": layer_decay,
                                        "train_bn": True}})
    data = load_arrays("digits")
    model = build_finetune_model(recipe, data)
    structure = model_structure(model)
    (stage,) = parse_stages(stages)
    compile_stage(model, recipe, stage, structure, steps_per_epoch=1)
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    loss = model.train_on_batch(data.x_train[:8].astype("float32"), data.y_train[:8])
    after = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    return model, structure, before, after, loss


@pytest.mark.parametrize("kind, stages", [("efficientnet", 3), ("mobilenet", 3), ("vit", 3)])
def test_each_new_family_builds_from_a_local_preset_and_finetunes_one_step(small_presets, kind, stages):
    model, structure, before, after, loss = _finetune_once(small_presets[kind])
    assert np.isfinite(np.asarray(loss, dtype="float32")).all()
    assert structure.stem and len(structure.stages) == stages and all(structure.stages)
    inner = _backbone(model)
    grouped = {id(lyr) for _, layers in structure.groups() for lyr in layers}
    for group, layers in structure.groups():  # every group moved in the one `all` step
        paths = {w.path for lyr in layers for w in lyr.trainable_weights}
        assert paths and any(not np.array_equal(before[p], after[p]) for p in paths), group
    if kind == "vit":  # one stage per transformer block, the encoder's final norm with the last
        assert [[lyr.name for lyr in s] for s in structure.stages] == [
            ["transformer_block_1"], ["transformer_block_2"], ["transformer_block_3", "dropout", "ln"]]
        assert model.get_layer("head_pool").__class__.__name__ == "GlobalAveragePooling1D"
    else:
        assert all(id(lyr) in grouped for lyr in inner.layers if lyr.weights)


def test_vit_layer_decay_gives_block_i_of_L_the_rate_decay_to_the_L_plus_1_minus_i(small_presets):
    """BEiT's layer-wise decay through kzoo's per-group rates: with layer_decay 0.5 under plain
    SGD, one step moves transformer block i (of 3) 0.5**(4 - i) times as far as without decay,
    the embedding 0.5**4 and the head as far."""
    plain = _finetune_once(small_presets["vit"], stages="all:1@1")
    decayed = _finetune_once(small_presets["vit"], layer_decay=0.5, stages="all:1@1")
    model = decayed[0]
    factors = {"head_": 1.0, "vit_encoder/transformer_block_1/": 0.5 ** 3, "vit_encoder/transformer_block_2/": 0.5 ** 2,
               "vit_encoder/transformer_block_3/": 0.5, "vit_encoder/ln/": 0.5, "vit_patching_and_embedding/": 0.5 ** 4}
    seen = set()
    for path, start in plain[2].items():
        prefix = next(p for p in factors if path.startswith(p))
        assert model.optimizer.multiplier(next(v for v in model.trainable_variables if v.path == path)) == \
            pytest.approx(factors[prefix]), path
        step_plain, step_decayed = plain[3][path] - start, decayed[3][path] - start
        assert np.any(step_plain), path
        # float32 weights: a difference of two values ~0.1 is exact to about 1e-8
        np.testing.assert_allclose(step_decayed, factors[prefix] * step_plain, rtol=1e-3, atol=1e-7)
        seen.add(prefix)
    assert seen == set(factors)
