"""Model and weights files from users load without running code from them."""

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

    trusted = load_model(path, trust=True, compile=False)
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
    wrong_kind = tmp_path / "model.keras"
    wrong_kind.touch()
    with pytest.raises(ModelFileError, match="must end in .weights.h5"):
        load_weights(mlp(8), wrong_kind)
