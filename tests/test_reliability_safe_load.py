"""Model and weights files from users load without running code from them."""

import json
import zipfile

import keras
import numpy as np
import pytest

from kzoo.safe_load import (
    ModelFileError,
    UnsafeModelError,
    layers_with_code,
    load_model,
    load_weights,
)


def _lambda_model(marker_path):
    # The lambda leaves a marker file whenever it runs: when Keras rebuilds the model from the
    # file (it calls every layer on symbolic inputs), the marker shows the code was executed.
    inputs = keras.Input((3,))
    x = keras.layers.Lambda(lambda t: (open(marker_path, "w").close(), t * 2)[1], name="doubler")(inputs)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_file_with_lambda_is_refused_and_its_code_never_runs(tmp_path, suffix):
    marker = tmp_path / "code-ran"
    model = _lambda_model(str(marker))
    path = tmp_path / f"model{suffix}"
    model.save(path)
    marker.unlink()

    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "'doubler'" in message and "--trust-model" in message and "\n" not in message
    assert message.endswith(f"Received: {path}")
    assert not marker.exists()

    trusted = load_model(path, trust_model=True, compile=False)
    assert marker.exists()  # the flag really does hand the file's code to Keras
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(trusted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_kzoo_run_model_loads_in_safe_mode(tmp_path):
    from kzoo.zoo import create_model

    model = create_model("mlp", (8, 8, 1), 10, depth=1, width=8, dropout=0.1)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_lambda_wrapping_a_named_function_holds_no_code():
    config = {"class_name": "Lambda", "config": {"name": "act", "function": {
        "class_name": "function", "config": "relu", "module": "keras.activations"}}}
    assert layers_with_code(config) == []
    legacy = {"class_name": "Lambda", "config": {"name": "old", "function": ["bytecode"], "function_type": "lambda"}}
    assert layers_with_code({"layers": [legacy]}) == ["old"]


def test_damaged_or_foreign_files_give_one_line(tmp_path):
    good = tmp_path / "good.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(good)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[:200])
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    no_config = tmp_path / "empty.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("other.txt", "x")
    for path in (truncated, not_a_model, no_config, tmp_path / "missing.keras"):
        with pytest.raises(ModelFileError) as info:
            load_model(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_weights_file_for_another_architecture_is_refused(tmp_path):
    def mlp(width):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width), keras.layers.Dense(2)])

    source = mlp(8)
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    target = load_weights(mlp(8), path)
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelFileError, match="Cannot load .*backbone.weights.h5"):
        load_weights(mlp(16), path)
    # A whole saved model gives its weights too (Keras reads only the weights of the archive).
    source.save(tmp_path / "model.keras")
    target = load_weights(mlp(8), tmp_path / "model.keras")
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    wrong_kind = tmp_path / "model.h5"
    wrong_kind.touch()
    with pytest.raises(ModelFileError, match="must end in .weights.h5 or .keras"):
        load_weights(mlp(8), wrong_kind)


# ---------------------------------------------------------------- every command that loads a model
@pytest.fixture(scope="module")
def lambda_run(tmp_path_factory):
    """A run directory (digits recipe, model.keras) whose model holds a Lambda layer, named as
    kzoo names its layers so that it also serves as a fine-tuning backbone."""
    from kzoo.recipes import load

    run_dir = tmp_path_factory.mktemp("lambda") / "run"
    run_dir.mkdir()
    (run_dir / "recipe.toml").write_text(load("mlp-digits").to_toml())
    inputs = keras.Input((8, 8, 1), name="input")
    x = keras.layers.Flatten(name="stem_flatten")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(x)
    x = keras.layers.Dense(16, activation="relu", name="stage0_block0_dense")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head_dense")(x)
    keras.Model(inputs, outputs).save(run_dir / "model.keras")
    return run_dir


def _refusal(path):
    return (f"kzoo: error: {path} holds Python code (Lambda layer 'doubler'); kzoo does not run code "
            f"from model files. If you trust its source, pass --trust-model (Python: trust_model=True). "
            f"Received: {path}\n")


COMMANDS = {
    "eval": lambda run, out: ["eval", run],
    "export": lambda run, out: ["export", run, "--format", "keras", "--out", out / "exported.keras"],
    "finetune": lambda run, out: ["finetune", "--backbone", run, "--data", "digits", "--stages", "head:1@1e-3",
                                  "--out", out / "ft", "--quiet"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_refuses_a_model_with_code_in_one_line_unless_trusted(command, lambda_run, tmp_path, cli):
    args = COMMANDS[command](lambda_run, tmp_path)
    before = sorted(p.name for p in lambda_run.iterdir())
    code, out, err = cli(*args)
    assert code == 2
    assert err == _refusal(lambda_run / "model.keras")
    assert sorted(p.name for p in lambda_run.iterdir()) == before  # nothing written into the run
    assert list(tmp_path.iterdir()) == []  # nor anywhere else

    code, out, err = cli(*args, "--trust-model")
    assert code == 0, err
    if command == "eval":
        report = json.loads((lambda_run / "eval.json").read_text())
        assert report["num_test"] == 360 and f"accuracy {report['test_accuracy']:.4f}" in out
    elif command == "export":
        # The export keeps the Lambda: reading it back for its check needed the same trust.
        assert "test accuracy: keras" in out
        assert layers_with_code(json.loads(zipfile.ZipFile(tmp_path / "exported.keras").read("config.json")))
    else:
        metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
        assert metrics["stages"] == ["head:1@0.001"]
        with pytest.raises(UnsafeModelError):  # the fine-tuned model keeps the backbone's code
            load_model(tmp_path / "ft" / "model.keras")


def test_recipe_backbone_with_code_needs_the_caller_to_trust_it(lambda_run, tmp_path, cli):
    # A recipe can name a model file but cannot vouch for it: only `kzoo run --trust-model` can.
    from kzoo.recipes.schema import build_recipe

    backbone = lambda_run / "model.keras"
    recipe = tmp_path / "transfer.toml"
    recipe.write_text(build_recipe({"data": {"dataset": "digits"},
                                    "finetune": {"stages": "head:1@1e-3", "backbone": str(backbone)}}).to_toml())
    code, out, err = cli("run", recipe, "--out", tmp_path / "r", "--quiet")
    assert code == 2 and err == _refusal(backbone)
    assert not (tmp_path / "r").exists()
    code, out, err = cli("run", recipe, "--out", tmp_path / "r", "--quiet", "--trust-model")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["num_test"] == 360
