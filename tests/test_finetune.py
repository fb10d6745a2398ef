"""Staged fine-tuning: stage plans, freezing (weights and BN statistics), per-group learning
rates, the merged history, backbones, and the transfer recipe."""

import csv
import json
import os

import keras
import numpy as np
import pytest

import kzoo  # noqa: F401
from kzoo.errors import RecipeError, UserError
from kzoo.finetune import freeze, model_structure, parse_stages, with_group_learning_rates
from kzoo.recipes.schema import build_recipe
from kzoo.train import compile_stage, group_multipliers
from kzoo.zoo import create_model


# ---------------------------------------------------------------- stage plans
def test_cli_spelling_parses_into_stages():
    plan = parse_stages("head:3@1e-3, top2:3@1e-4, all:4@1e-5")
    assert [(s.trainable, s.epochs, s.lr) for s in plan] == [("head", 3, 1e-3), ("top2", 3, 1e-4), ("all", 4, 1e-5)]
    assert [s.trainable_groups(3) for s in plan] == [1, 3, 5]  # head; head + 2 stages; head + 3 stages + stem


def test_discriminative_rates_slice_and_factor():
    (stage,) = parse_stages("all:2@1e-5..1e-3")
    rates = stage.rates(3)  # head, stage2, stage1, stage0, stem
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert np.allclose(np.diff(np.log(rates)), np.log(rates[1] / rates[0]))  # geometric
    (table,) = parse_stages([{"trainable": "top:2", "epochs": 1, "lr": 1e-2, "lr_factor": 0.5}])
    assert table.trainable == "top2" and table.rates(3) == pytest.approx([1e-2, 5e-3, 2.5e-3])


@pytest.mark.parametrize("spec, bad", [("hed:3@1e-3", "hed"), ("head:0@1e-3", "epochs=0"),
                                       ("head:3@-1", "lr=-1"), ("head:3", "head:3"),
                                       ("all:2@1e-3..1e-5", "lr_min=0.001")])
def test_bad_stages_are_recipe_errors_naming_the_value(spec, bad):
    with pytest.raises(RecipeError, match="Received") as e:
        parse_stages(spec)
    assert bad in str(e.value) and "\n" not in str(e.value)


def test_unfreezing_more_stages_than_the_model_has_is_an_error():
    (stage,) = parse_stages("top4:1@1e-3")
    with pytest.raises(RecipeError, match="top4"):
        stage.trainable_groups(3)


# ---------------------------------------------------------------- freezing
def _recipe(**finetune):
    return build_recipe({"optimizer": {"name": "adam"}, "finetune": {"stages": "head:1@1e-2", **finetune}})


def _snapshot(layers):
    return {w.path: np.array(w.numpy()) for layer in layers for w in layer.weights}


def _small():
    """Three conv-BN stages and a head: the smallest model with every kind of group."""
    return create_model("cnn", (8, 8, 1), 4, filters=[4, 4, 4], convs_per_stage=1)


@pytest.mark.parametrize("train_bn", [False, True])
def test_each_stage_changes_only_its_trainable_groups(train_bn):
    model = _small()
    structure = model_structure(model)
    groups = dict(structure.groups())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8, 8, 1)).astype("float32"), rng.integers(0, 4, 32)
    recipe = _recipe(train_bn=train_bn)
    for stage, expected in zip(parse_stages("head:1@1e-2, top1:1@1e-2, all:1@1e-2"),
                               [["head"], ["head", "stage2"], ["head", "stage2", "stage1", "stage0", "stem"]]):
        trainable = compile_stage(model, recipe, stage, structure, steps_per_epoch=2)
        assert trainable == expected
        before = {name: _snapshot(layers) for name, layers in groups.items()}
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        for name, layers in groups.items():
            after = _snapshot(layers)
            for path, value in before[name].items():
                same = np.array_equal(value, after[path])
                is_bn = "norm" in path.split("/")[-2]
                if name not in trainable:
                    assert same, f"{path} of frozen group {name} changed"  # bitwise, BN statistics included
                elif path.endswith("kernel") or path.endswith("bias"):
                    assert not same, f"{path} of trainable group {name} did not change"
                elif is_bn:
                    # BN of an unfrozen group trains (batch statistics, moving averages) only with train_bn.
                    assert same != train_bn, path


def test_frozen_batchnorm_runs_in_inference_mode():
    model = create_model("resnet20", (8, 8, 1), 4, width=0.25)
    freeze(model, model_structure(model), trainable_groups=1)
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)), atol=1e-6)


# ---------------------------------------------------------------- per-group learning rates
def _tiny():
    inputs = keras.Input((4,), name="input")
    x = keras.layers.Dense(3, name="stage0_block0_dense")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head_dense")(x))


@pytest.mark.parametrize("make", [lambda: keras.optimizers.SGD(0.1, momentum=0.9), lambda: keras.optimizers.Adam(0.01)])
def test_group_learning_rates_scale_updates_in_the_configured_ratio(make):
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.array([0, 1] * 4)
    plain, scaled = _tiny(), _tiny()
    scaled.set_weights(plain.get_weights())
    start = [np.array(w) for w in plain.get_weights()]
    plain.compile(make(), "sparse_categorical_crossentropy")
    scaled.compile(with_group_learning_rates(make(), {"stage0_block0_dense": 0.25}), "sparse_categorical_crossentropy")
    plain.train_on_batch(x, y)
    scaled.train_on_batch(x, y)
    for w0, wp, ws, var in zip(start, plain.get_weights(), scaled.get_weights(), plain.weights):
        factor = 0.25 if var.path.startswith("stage0") else 1.0
        assert np.any(wp - w0)
        np.testing.assert_allclose(ws - w0, factor * (wp - w0), rtol=1e-4, atol=1e-7)


def test_stage_rates_become_layer_multipliers():
    model = create_model("resnet20", (8, 8, 1), 4, width=0.25)
    structure = model_structure(model)
    (stage,) = parse_stages([{"trainable": "top2", "epochs": 1, "lr": 1e-2, "lr_factor": 0.5}])
    multipliers = group_multipliers(structure, stage.rates(3))
    assert multipliers["stage2_block0_conv1"] == 0.5 and multipliers["stage1_block2_conv2"] == 0.25
    assert "head_dense" not in multipliers and "stage0_block0_conv1" not in multipliers


def test_group_learning_rates_are_saved_with_the_model_and_resume(tmp_path):
    model = _small()
    structure = model_structure(model)
    (stage,) = parse_stages("all:1@1e-4..1e-2")
    compile_stage(model, _recipe(), stage, structure, steps_per_epoch=1)
    x, y = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32"), np.arange(8) % 4
    model.train_on_batch(x, y)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer).__name__ == "KzooAdam"
    assert loaded.optimizer.lr_multipliers == model.optimizer.lr_multipliers
    # five groups from 1e-2 (head) down to 1e-4 (the stem, empty in this CNN): stage0 is three steps down.
    assert loaded.optimizer.lr_multipliers["stage0_block0_conv"] == pytest.approx(0.01 ** 0.75)
    assert int(loaded.optimizer.iterations) == 1
    loaded.train_on_batch(x, y)
    assert int(loaded.optimizer.iterations) == 2
    # A fresh process that imports only kzoo loads it too (the optimizer classes are registered).
    import subprocess
    import sys

    code = ("import kzoo, keras, sys; m = keras.models.load_model(sys.argv[1]); "
            "print(type(m.optimizer).__name__, len(m.optimizer.lr_multipliers))")
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["KzooAdam", str(len(model.optimizer.lr_multipliers))]


# ---------------------------------------------------------------- staged runs
def test_staged_recipe_writes_one_history_with_a_stage_column(tmp_path, monkeypatch):
    from kzoo import plots
    from kzoo.recipes import load, run

    drawn = {}
    original = plots.plot_curves
    monkeypatch.setattr(plots, "plot_curves", lambda rows, path, title="", boundaries=(): (
        drawn.update(boundaries=list(boundaries)), original(rows, path, title, boundaries))[1])
    recipe = build_recipe({"name": "staged", "model": {"name": "mlp", "depth": 2, "width": 16},
                           "finetune": {"stages": "head:1@1e-3, all:2@1e-3"}})
    assert recipe.epochs == 3
    result = run(recipe, out=str(tmp_path / "r"), verbose=0)
    with open(tmp_path / "r" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["stage"] for r in rows] == ["1", "2", "2"]
    assert result.metrics["stage_boundaries"] == [1] and drawn["boundaries"] == [1]
    assert os.path.isfile(tmp_path / "r" / "curves.png")
    again = load(str(tmp_path / "r" / "recipe.toml"))
    assert again.finetune.stages == recipe.finetune.stages and again.epochs == 3


def test_single_stage_recipes_read_as_before():
    from kzoo.recipes import load

    assert "finetune" not in load("mlp-digits").to_toml()
    with pytest.raises(RecipeError, match="epochs=5"):
        build_recipe({"epochs": 5, "finetune": {"stages": "head:1@1e-3"}})


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_cli_finetunes_a_zoo_model_then_an_earlier_run(cli, tmp_path):
    first = tmp_path / "first"
    code, out, err = cli("finetune", "--backbone", "mlp", "--data", "digits", "--stages", "head:1@1e-3, all:1@1e-3",
                         "--set", "model.width=16", "--out", first, "--quiet")
    assert code == 0, err
    second = tmp_path / "second"
    code, out, err = cli("finetune", "--backbone", first, "--data", "digits", "--stages", "top1:1@1e-3",
                         "--labels-per-class", 5, "--out", second, "--quiet")
    assert code == 0, err
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["num_train"] == 50 and metrics["stages"] == ["top1:1@0.001"]
    model = keras.models.load_model(second / "model.keras")
    first_model = keras.models.load_model(first / "model.keras")
    assert len(model_structure(model).stages) == len(model_structure(first_model).stages) == 3
    # The earlier run is the starting point: `top1` trained its last stage on, and left the
    # stages below exactly as the first run's training left them.
    backbone = model.get_layer("backbone")
    for name, trained in (("stage0_block0_dense", False), ("stage1_block0_dense", False),
                          ("stage2_block0_dense", True)):
        same = [np.array_equal(a, b) for a, b in
                zip(backbone.get_layer(name).get_weights(), first_model.get_layer(name).get_weights())]
        assert same and all(same) != trained, name
    code, out, err = cli("finetune", "--backbone", first, "--data", "digits", "--stages", "head:1@1e-3",
                         "--set", "finetune.pad=2", "--out", tmp_path / "third")
    assert code == 2 and "Received: input_shape=(12, 12, 1)" in err
    assert not (tmp_path / "third").exists()  # nothing left of a run that never started


def test_cli_bad_stage_plan_is_one_line_exit_2(cli):
    code, out, err = cli("finetune", "--backbone", "mlp", "--data", "digits", "--stages", "hed:1@1e-3")
    assert code == 2 and err.count("\n") == 1 and "Received" in err


def test_digits_in_mnist_framing_with_five_labels_per_class():
    from kzoo.data import load_arrays
    from kzoo.train import Session

    recipe = build_recipe({"finetune": {"stages": "head:1@1e-3", "pixel_max": 255.0, "resize": [20, 20], "pad": 4,
                                        "labels_per_class": 5}})
    session = Session(recipe)
    data = session.data
    assert data.info.input_shape == (8, 8, 1) and data.info.num_train == 50  # the data stay raw
    assert np.bincount(data.arrays.y_train).tolist() == [5] * 10
    assert len(data.arrays.x_test) == len(load_arrays("digits").x_test)  # evaluated on the whole test split
    framed = np.asarray(session.framing()(data.arrays.x_test))
    assert framed.shape[1:] == (28, 28, 1)
    assert framed.max() == pytest.approx(255.0, rel=0.02)
    assert not framed[:, :4].any() and not framed[:, :, -4:].any()  # 4-pixel empty frame
    model = session.build()
    assert model.input_shape[1:] == (8, 8, 1)
    assert model.layers[1].name == "preprocess_frame"  # the framing comes first, on the raw digits


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_transfer_recipe_reports_fine_tuned_and_scratch_accuracy(tmp_path):
    from kzoo.recipes import load, run

    recipe = load("transfer-mnist-digits", ["model.filters=[4, 8, 8]", "model.convs_per_stage=1",
                                            "finetune.pretrain.epochs=1",
                                            "finetune.pretrain.batch_size=500",
                                            'finetune.stages=["head:1@1e-3", "all:1@1e-3"]'])
    result = run(recipe, out=str(tmp_path / "t"), verbose=0)
    m = result.metrics
    assert m["num_train"] == 50 and m["pretrain_dataset"] == "mnist-5k"
    # Each figure is the accuracy of the model it names on that model's whole test split.
    from kzoo.data import load_arrays

    def accuracy(model, x, y):
        return float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))

    raw = load_arrays("digits")  # the model frames the raw digits itself
    assert m["test_accuracy"] == pytest.approx(accuracy(result.model, raw.x_test, raw.y_test), abs=1e-6)
    mnist = load_arrays("mnist-5k")
    pretrained = keras.models.load_model(tmp_path / "t" / "pretrained.keras")
    assert m["pretrain_test_accuracy"] == pytest.approx(accuracy(pretrained, mnist.x_test, mnist.y_test), abs=1e-6)
    # The scratch model is not kept, but its figure counts right answers on the same 360 images.
    n = len(raw.y_test)
    assert n == 360 and m["scratch_test_accuracy"] * n == pytest.approx(round(m["scratch_test_accuracy"] * n), abs=1e-3)
    assert result.model.input_shape[1:] == (8, 8, 1)
    assert os.path.isfile(tmp_path / "t" / "pretrained.keras")
    assert os.path.isfile(tmp_path / "t" / "report.html")  # staged runs get the report too


# ---------------------------------------------------------------- keras.applications backbones
def test_application_backbone_takes_a_local_weights_file_and_keeps_its_structure(tmp_path):
    from kzoo.data import load_arrays
    from kzoo.train import build_finetune_model
    from kzoo.zoo.backbones import build_application

    app = build_application("MobileNetV3Small", (32, 32, 3), "none")
    path = str(tmp_path / "mnv3.weights.h5")
    app.save_weights(path)
    recipe = build_recipe({"finetune": {"stages": "head:1@1e-3", "backbone": "MobileNetV3Small", "weights": path}})
    model = build_finetune_model(recipe, load_arrays("digits"))
    inner = model.get_layer("backbone_mobilenetv3small")
    for a, b in zip(inner.get_weights(), app.get_weights()):
        np.testing.assert_array_equal(a, b)
    structure = model_structure(model)
    assert len(structure.stages) == 4 and [lyr.name for lyr in structure.head] == ["head_pool", "head_dense"]
    grouped = {lyr.name for _, layers in structure.groups() for lyr in layers}
    assert all(lyr.name in grouped for lyr in inner.layers if lyr.weights)
    # Rates reach the nested application's variables: every one below the head learns slower.
    (stage,) = parse_stages("all:1@1e-4..1e-2")
    compile_stage(model, recipe, stage, structure, steps_per_epoch=1)
    factors = [model.optimizer.multiplier(v) for v in inner.trainable_variables]
    assert factors and max(factors) < 1 and min(factors) == pytest.approx(0.01)
    model.save(tmp_path / "ft.keras")
    assert model_structure(keras.models.load_model(tmp_path / "ft.keras")).names() == structure.names()


def test_imagenet_weights_offline_is_one_line_naming_the_fix(monkeypatch):
    from keras.src.utils import file_utils

    from kzoo.zoo.backbones import build_application

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(UserError, match="--weights none.*--weights FILE") as e:
        build_application("MobileNetV3Small", (32, 32, 3), "imagenet")
    assert "\n" not in str(e.value)


def test_list_backbones_shows_every_keras_application_and_the_zoo_models(cli):
    from kzoo.zoo.backbones import applications

    names = sorted(applications())
    assert len(names) >= 38 and {"ResNet50", "NASNetLarge", "EfficientNetV2L", "ConvNeXtXLarge"} <= set(names)
    code, out, err = cli("list", "backbones")
    assert code == 0
    for name in names + ["resnet20", "cnn"]:
        assert f"\n{name} " in out, name
    # Each application's input normalization is read from its own preprocess_input.
    from kzoo.zoo.backbones import BACKBONES

    assert [BACKBONES.meta(n)["preprocess"] for n in ("ResNet50", "MobileNetV2", "DenseNet121", "EfficientNetB0")] == [
        "caffe", "tf", "torch", "none"]
    assert {n: BACKBONES.meta(n)["min_size"] for n in ("InceptionV3", "Xception", "NASNetLarge")} == {
        "InceptionV3": 75, "Xception": 71, "NASNetLarge": 32}


# ---------------------------------------------------------------- weights: pretrained by default
def _offline(monkeypatch, tmp_path):
    """Keras's weights cache is an empty folder under tmp_path and every download fails as it
    does without a network; returns the list of files Keras asked for."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    asked = []

    def no_network(url, path, *args, **kwargs):
        asked.append(path)
        raise file_utils.URLError("[Errno -3] Temporary failure in name resolution")

    (tmp_path / "keras_home").mkdir()  # Keras falls back to /tmp/.keras for a folder it cannot write
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return asked


@pytest.mark.parametrize("backbone, weights, expected", [
    ("MobileNetV2", "", "imagenet"), ("MobileNetV2", "none", "none"), ("MobileNetV2", "w.weights.h5", "w.weights.h5"),
    ("resnet20", "", "none"), ("", "", "none"), ("runs/x/model.keras", "", "none"), ("hub:resnet_50_imagenet", "", "none"),
])
def test_default_weights_are_imagenet_only_for_keras_applications(backbone, weights, expected):
    from kzoo.zoo.backbones import resolve_weights

    assert resolve_weights(backbone, weights) == expected
    recipe = build_recipe({"finetune": {"stages": "head:1@1e-3", "backbone": backbone, "weights": weights}})
    assert recipe.finetune.weights == weights  # the recipe keeps what was written; resolved per backbone


@pytest.mark.parametrize("finetune, message", [
    ({"weights": "imagenet"}, "Only keras.applications backbones have ImageNet weights"),
    ({"backbone": "resnet20", "weights": "imagenet"}, "'resnet20' starts from 'none'"),
    ({"backbone": "hub:resnet_50_imagenet", "weights": "imagenet"}, "A KerasHub preset brings its own weights"),
    ({"layer_decay": 1.5}, "finetune.layer_decay must be in [0, 1]"),
])
def test_meaningless_weights_and_decay_are_refused_when_the_recipe_loads(finetune, message):
    with pytest.raises(RecipeError) as e:
        build_recipe({"finetune": {"stages": "head:1@1e-3", **finetune}})
    assert message in str(e.value) and "Received" in str(e.value) and "\n" not in str(e.value)


def test_offline_default_weights_exit_2_naming_weights_before_a_run_folder(cli, tmp_path, monkeypatch):
    """The issue's acceptance line: `kzoo finetune --backbone MobileNetV2 --data FOLDER` with the
    default weights, offline, is one line naming --weights, exit 2, and leaves no run folder."""
    asked = _offline(monkeypatch, tmp_path)
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(4):
            keras.utils.save_img(tmp_path / "photos" / cls / f"{i}.png", rng.integers(0, 255, (8, 8, 3)).astype("uint8"))
    code, out, err = cli("finetune", "--backbone", "MobileNetV2", "--data", tmp_path / "photos",
                         "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.count("\n") == 1 and not out, (out, err)  # Keras's download notes stay quiet
    assert "--weights none" in err and "--weights FILE" in err and "Received: weights='imagenet'" in err
    assert asked and os.path.basename(asked[0]).startswith("mobilenet_v2")  # it did try Keras's download
    assert not (tmp_path / "run").exists()


def test_imagenet_weights_come_from_keras_cache_offline(tmp_path, monkeypatch):
    """With the file Keras asks for in its cache (`$KERAS_HOME/models/`), the default weights
    build offline and are that file's."""
    from keras.src.legacy.saving import legacy_h5_format

    from kzoo.zoo.backbones import build_application

    asked = _offline(monkeypatch, tmp_path)
    with pytest.raises(UserError):
        build_application("MobileNetV2", (32, 32, 3))
    (path,) = asked  # the exact cache file keras.applications looks for
    assert os.path.dirname(path) == str(tmp_path / "keras_home" / "models")
    keras.utils.set_random_seed(3)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    import h5py

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    app = build_application("MobileNetV2", (32, 32, 3))  # default weights: imagenet, from the cache
    assert len(asked) == 1  # nothing downloaded the second time
    for a, b in zip(app.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- layer-wise rate decay
def test_layer_decay_scales_each_group_update_by_its_depth_under_sgd():
    """One SGD step at one rate for all groups: with layer_decay 0.5 the update of the group k
    places below the head is 0.5**k times the update without decay (Bao et al. 2022)."""
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    y = np.arange(16) % 4
    updates = {}
    for decay in (0.0, 0.5):
        model = _small()
        keras.utils.set_random_seed(0)
        model.set_weights([np.random.default_rng(i).normal(size=w.shape).astype("float32") * 0.3
                           for i, w in enumerate(model.get_weights())])
        recipe = build_recipe({"optimizer": {"name": "sgd", "momentum": 0.0},
                               "finetune": {"stages": "all:1@0.1", "layer_decay": decay}})
        structure = model_structure(model)
        (stage,) = parse_stages(recipe.finetune.stages)
        compile_stage(model, recipe, stage, structure, steps_per_epoch=1)
        before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
        model.train_on_batch(x, y)
        updates[decay] = {v.path: np.array(v.numpy()) - before[v.path] for v in model.trainable_variables}
    depth = {"head": 0, "stage2": 1, "stage1": 2, "stage0": 3}
    checked = set()
    for path, plain in updates[0.0].items():
        group = "head" if path.startswith("head_") else path.split("_")[0]
        assert np.any(plain), path
        np.testing.assert_allclose(updates[0.5][path], 0.5 ** depth[group] * plain, rtol=1e-4, atol=1e-7)
        checked.add(group)
    assert checked == set(depth)


# ---------------------------------------------------------------- every keras.applications backbone
def _application_params():
    from kzoo.zoo.backbones import applications

    # All slow: even the smallest (MobileNetV3Small) takes over 5 s on 2 shared cores; the default
    # suite covers the mechanism with MobileNetV2 / MobileNetV3Small in the weights tests above.
    return [pytest.param(n, marks=pytest.mark.slow) for n in sorted(applications())]


@pytest.mark.parametrize("name", _application_params())
def test_every_application_builds_splits_into_ordered_stages_and_finetunes_one_step(name):
    from kzoo.data.splits import ArraySplits, DatasetInfo
    from kzoo.train import build_finetune_model
    from kzoo.zoo.backbones import BACKBONES

    side = BACKBONES.meta(name)["min_size"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (4, side, side, 3)).astype("float32")
    y = np.array([0, 0, 0, 1])
    data = ArraySplits(x, y, x, y, x, y, DatasetInfo("noise", (side, side, 3), 2, num_train=4))
    # train_bn: a random backbone's BatchNormalization in inference mode lets some features
    # vanish (1e-12 at MobileNetV2's end); batch statistics keep every stage's gradient alive.
    recipe = build_recipe({"optimizer": {"name": "sgd"}, "seed": 0,
                           "finetune": {"stages": "all:1@1e-2", "backbone": name, "weights": "none",
                                        "train_bn": True}})
    model = build_finetune_model(recipe, data)
    inner = model.get_layer(f"backbone_{name.lower()}")
    structure = model_structure(model)
    assert structure.stem and len(structure.stages) >= 3 and all(structure.stages), structure.names()
    order = {lyr.name: i for i, lyr in enumerate(inner.layers)}
    spans = [(order[g[0].name], order[g[-1].name]) for g in [structure.stem] + structure.stages]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # groups follow one another, in order
    grouped = {lyr.name for _, layers in structure.groups() for lyr in layers}
    assert all(lyr.name in grouped for lyr in inner.layers if lyr.weights)
    (stage,) = parse_stages(recipe.finetune.stages)
    compile_stage(model, recipe, stage, structure, steps_per_epoch=1)
    before = {name: _snapshot(layers) for name, layers in structure.groups()}
    loss = model.train_on_batch(x, y)
    assert np.isfinite(np.asarray(loss, dtype="float32")).all()
    for group, layers in structure.groups():  # one step moved every group, the stem included
        after = _snapshot(layers)
        assert any(not np.array_equal(v, after[k]) for k, v in before[group].items()), group
