"""`kzoo export`: SavedModel served without kzoo, TFLite with quantization, serving .keras."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny cnn-digits run: raw 0-16 pixels in, standardization and augmentation inside; in
    float32, so the unquantized exports can be held to the Keras model's own numbers."""
    from kzoo.recipes import load, run

    recipe = load("cnn-digits", {"epochs": 3, "model.filters": [8, 16], "model.convs_per_stage": 1,
                                 "mixed_precision": "off"})
    return run(recipe, out=str(tmp_path_factory.mktemp("export") / "run"), verbose=0).out_dir


@pytest.fixture(scope="module")
def reference(run_dir):
    """The test split and the Keras model's probabilities on it."""
    from kzoo.evaluate import load_run, predict, test_split

    recipe, model = load_run(run_dir)
    split = test_split(recipe)
    return split.x_test.astype("float32"), split.y_test, predict(model, split.x_test)


@pytest.fixture(scope="module")
def float_tflite_size(run_dir, tmp_path_factory):
    from kzoo.export import export_run

    out = str(tmp_path_factory.mktemp("tflite") / "float.tflite")
    return export_run(run_dir, "tflite", out=out, check=False).size_bytes


def test_savedmodel_serves_raw_images_in_a_process_without_kzoo(run_dir, reference, tmp_path):
    from kzoo.export import export_run

    result = export_run(run_dir, "savedmodel", out=str(tmp_path / "sm"))
    assert result.max_abs_diff <= 1e-5 and result.exported_accuracy == result.keras_accuracy
    x, _, probs = reference
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        model = tf.saved_model.load({str(tmp_path / "sm")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        serve = model.serve(tf.constant(x)).numpy()
        default = model.signatures["serving_default"]
        by_signature = next(iter(default(**{{list(default.structured_input_signature[1])[0]: tf.constant(x)}}).values()))
        np.save({str(tmp_path / "y.npy")!r}, serve)
        np.save({str(tmp_path / "y_default.npy")!r}, by_signature.numpy())
        loaded = sorted(m for m in sys.modules if m == "kzoo" or m.startswith("kzoo."))
        assert not loaded, loaded
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), probs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "y_default.npy"), probs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic"])
def test_tflite_runs_in_the_interpreter_with_a_small_accuracy_change(run_dir, reference, float_tflite_size,
                                                                     tmp_path, quantize):
    from kzoo.evaluate import accuracy
    from kzoo.export import export_run, tflite_predict

    result = export_run(run_dir, "tflite", out=str(tmp_path / "m.tflite"), quantize=quantize)
    x, y, probs = reference
    lite = tflite_predict(result.path, x, batch_size=100)  # 360 examples: the last batch is smaller
    np.testing.assert_allclose(lite.sum(axis=1), 1.0, atol=1e-3)
    assert result.exported_accuracy == pytest.approx(accuracy(lite, y), abs=1e-6)
    change = result.exported_accuracy - result.keras_accuracy
    print(f"tflite {quantize}: {result.size_bytes} bytes, accuracy {result.keras_accuracy:.4f} -> "
          f"{result.exported_accuracy:.4f} ({change:+.4f}), max |dp| {result.max_abs_diff:.2e}")
    if quantize == "none":
        assert result.max_abs_diff < 1e-4
        assert change == pytest.approx(0, abs=1e-6)
    else:
        assert abs(change) <= 0.02
        assert result.max_abs_diff < 0.1
    if quantize != "none":
        # Smaller weights (float16: 2 bytes, dynamic range: int8 for tensors of over 1,024
        # values); in a model this small the flatbuffer's fixed overhead dominates the size.
        assert result.size_bytes < float_tflite_size


def test_keras_export_has_no_optimizer_state_and_predicts_the_same(run_dir, reference, tmp_path):
    import keras

    from kzoo.export import export_run

    result = export_run(run_dir, "keras", out=str(tmp_path / "serve.keras"))
    assert result.max_abs_diff == 0
    assert result.size_bytes < os.path.getsize(os.path.join(run_dir, "model.keras"))
    model = keras.saving.load_model(result.path)
    np.testing.assert_allclose(model.predict(reference[0], verbose=0), reference[2], atol=1e-6)


def test_export_cli_reports_the_accuracy_change_and_guards_earlier_exports(run_dir, cli):
    code, out, err = cli("export", run_dir, "--format", "tflite", "--quantize", "dynamic")
    assert code == 0, err
    path = os.path.join(run_dir, "export", "model-dynamic.tflite")
    assert os.path.isfile(path) and path in out
    assert "test accuracy: keras" in out and "change" in out

    code, _, err = cli("export", run_dir, "--format", "tflite", "--quantize", "dynamic", "--no-check")
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("export", run_dir, "--format", "tflite", "--quantize", "dynamic", "--no-check", "--overwrite")
    assert code == 0, err
    code, _, err = cli("export", run_dir, "--format", "savedmodel", "--quantize", "float16")
    assert code == 2 and err.strip().endswith("format='savedmodel'")


def test_a_failed_check_leaves_the_earlier_export_as_it_was(run_dir, cli, monkeypatch):
    import kzoo.export

    code, _, err = cli("export", run_dir, "--format", "savedmodel", "--out", os.path.join(run_dir, "serve"))
    assert code == 0, err
    before = {os.path.relpath(os.path.join(root, f), run_dir): open(os.path.join(root, f), "rb").read()
              for root, _, files in os.walk(os.path.join(run_dir, "serve")) for f in files}

    def broken(path, format, batch_size, trust_model=False):
        def serve(x):
            raise RuntimeError("the runtime could not allocate its tensors\nand a second line")
        return serve

    monkeypatch.setattr(kzoo.export, "_export_predictor", broken)
    code, out, err = cli("export", run_dir, "--format", "savedmodel", "--out", os.path.join(run_dir, "serve"),
                         "--overwrite")
    assert code == 2 and err.count("\n") == 1 and "could not allocate" in err and "Traceback" not in err
    after = {os.path.relpath(os.path.join(root, f), run_dir): open(os.path.join(root, f), "rb").read()
             for root, _, files in os.walk(os.path.join(run_dir, "serve")) for f in files}
    assert after == before  # the earlier export, byte for byte
    assert not [f for f in os.listdir(run_dir) if f.startswith(".kzoo-export-")]  # no half-written export


def test_bfloat16_model_exports_to_a_float32_tflite(tmp_path):
    """TFLite has no bfloat16 kernels: a mixed_bfloat16 model (what `auto` trains convolutional
    models in on a CPU with native bfloat16) is exported computing in float32, weights unchanged."""
    from kzoo.export import export_run
    from kzoo.recipes import load, run

    recipe = load("cnn-digits", {"epochs": 2, "model.filters": [8, 16], "model.convs_per_stage": 1,
                                 "mixed_precision": "mixed_bfloat16"})
    run_dir = run(recipe, out=str(tmp_path / "run"), verbose=0).out_dir
    result = export_run(run_dir, "tflite", out=str(tmp_path / "m.tflite"))
    # bfloat16 keeps 8 bits of mantissa: probabilities move by about 1e-3, not more.
    assert 0 < result.max_abs_diff < 0.02
    assert abs(result.exported_accuracy - result.keras_accuracy) <= 0.02
