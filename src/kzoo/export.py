"""Exporting a trained run for serving: TensorFlow SavedModel, TFLite (optionally quantized)
and a serving-sized `.keras` file.

kzoo models carry every transformation training applied to their inputs as layers (fine-tuning's
framing, normalization, PCA whitening), so every export takes raw inputs, exactly as the dataset
yields them, and a serving client needs nothing from kzoo. An export is written next to its
destination and moved into place only once its check passes.

Example:
    >>> result = kzoo.export.export_run("runs/cnn-digits-0", "tflite", quantize="float16")
    >>> result.path, result.keras_accuracy, result.exported_accuracy
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kzoo.errors import RunDirError, UserError
from kzoo.evaluate import accuracy, load_run, predict, test_data
from kzoo.runs import atomic_write
from kzoo.safe_load import load_model_file

FORMATS = ("savedmodel", "tflite", "keras")
QUANTIZATIONS = ("none", "float16", "dynamic")
DEFAULT_NAMES = {"savedmodel": "savedmodel", "tflite": "model.tflite", "keras": "model.keras"}


@dataclass
class ExportResult:
    """Where an export went and how its predictions compare with the Keras model's.

    Attributes:
        path: the exported file or directory.
        format: `savedmodel`, `tflite` or `keras`.
        quantize: the TFLite quantization (`none` otherwise).
        size_bytes: size on disk.
        keras_accuracy: the Keras model's test accuracy (None when not checked).
        exported_accuracy: the exported model's test accuracy (None when not checked).
        max_abs_diff: largest absolute difference between the two models' probabilities.
    """

    path: str
    format: str
    quantize: str = "none"
    size_bytes: int = 0
    keras_accuracy: float | None = None
    exported_accuracy: float | None = None
    max_abs_diff: float | None = None


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def export_savedmodel(model, path: str) -> str:
    """Exports a TensorFlow SavedModel with the `serve` / `serving_default` signature: raw float32
    inputs in, class probabilities out. It loads with `tf.saved_model.load` without kzoo.

    The endpoint calls the model with `training=False`: `model.export` alone would trace it in
    the default mode, in which Keras's random augmentation layers stay active.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="images")
    archive.add_endpoint("serve", lambda images: model(images, training=False), input_signature=[spec])
    archive.write_out(path, verbose=False)
    return path


def export_tflite(model, path: str, quantize: str = "none") -> str:
    """Converts a Keras model to a TFLite flatbuffer (through a temporary SavedModel).

    Args:
        quantize: `none` (float32), `float16` (weights stored as float16, about half the size)
            or `dynamic` (dynamic-range quantization: int8 weights, float activations, about a
            quarter of the size). Defaults to `"none"`.

    Reference:
        TensorFlow Lite post-training quantization,
        https://ai.google.dev/edge/litert/models/post_training_quantization
    """
    if quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: quantize={quantize!r}")
    with tempfile.TemporaryDirectory(prefix="kzoo-tflite-") as tmp:
        saved = export_savedmodel(float32_copy(model), os.path.join(tmp, "savedmodel"))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    atomic_write(path, flatbuffer)
    return path


def tflite_predict(path: str, x, batch_size: int = 256) -> np.ndarray:
    """Runs a TFLite model on `x`, in batches, with LiteRT's interpreter where `ai-edge-litert`
    is installed, else `tf.lite.Interpreter` (deprecated, still in TensorFlow 2.21)."""
    interpreter = _interpreter(path)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    x = np.asarray(x, dtype=inp["dtype"])
    outputs, current = [], None
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        if current != len(batch):
            interpreter.resize_tensor_input(inp["index"], [len(batch), *x.shape[1:]])
            interpreter.allocate_tensors()
            current = len(batch)
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(out["index"])))
    return np.concatenate(outputs).astype("float64")


def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)


def float32_copy(model):
    """`model` computing in float32 throughout, for TFLite (which has no bfloat16 kernels). A
    mixed-precision model keeps float32 variables, so its weights carry over unchanged; a
    float32 model is returned as it is."""
    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers()):
        return model

    def clone(layer):
        return type(layer).from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def export_keras(model, path: str) -> str:
    """Saves the model as `.keras` without optimizer state (smaller; for inference)."""
    clean = keras.models.clone_model(model, clone_function=lambda layer: layer)  # shares weights, no optimizer
    tmp = f"{path}.tmp-{os.getpid()}.keras"
    clean.save(tmp)
    os.replace(tmp, path)
    return path


def export_run(run_dir: str, format: str = "savedmodel", out: str | None = None, quantize: str = "none",
               overwrite: bool = False, check: bool = True, batch_size: int = 256,
               trust_model: bool = False) -> ExportResult:
    """Exports a finished run's model, and checks the export on the run's test split.

    Args:
        run_dir: the run directory (`recipe.toml`, `model.keras`).
        format: `savedmodel`, `tflite` or `keras`. Defaults to `"savedmodel"`.
        out: where to write. Defaults to `RUN_DIR/export/<savedmodel|model.tflite|model.keras>`
            (`model-float16.tflite` etc. when quantized).
        quantize: TFLite quantization, `none`, `float16` or `dynamic`. Defaults to `"none"`.
        overwrite: replace an earlier export at `out`. Defaults to `False`.
        check: predict the test split with the export and compare with the Keras model.
            Defaults to `True`.
        trust_model: load a model file holding Python code (`Lambda` layers); only for files
            you trust. Defaults to `False`.
    """
    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
    if quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: quantize={quantize!r}")
    if quantize != "none" and format != "tflite":
        raise UserError(f"--quantize applies to --format tflite only. Received: format={format!r}")
    recipe, model = load_run(run_dir, trust_model)
    if out is None:
        name = DEFAULT_NAMES[format]
        if quantize != "none":
            name = f"model-{quantize}.tflite"
        out = os.path.join(run_dir, "export", name)
    if os.path.exists(out) and not overwrite:
        raise RunDirError(f"{out} already exists. Pass --overwrite to replace it, or choose another --out.")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    # Written beside `out` (same file system, so the final move is a rename) and moved into place
    # only when the check passes: a failed export leaves an earlier one as it was.
    staging = tempfile.mkdtemp(prefix=".kzoo-export-", dir=parent)
    try:
        path = os.path.join(staging, os.path.basename(os.path.normpath(out)))
        if format == "savedmodel":
            export_savedmodel(model, path)
        elif format == "tflite":
            export_tflite(model, path, quantize)
        else:
            export_keras(model, path)
        result = ExportResult(path=out, format=format, quantize=quantize, size_bytes=_size(path))
        if check:
            _check_export(result, model, recipe, path, batch_size, trust_model)
        if os.path.exists(out):
            shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
        os.replace(path, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _check_export(result, model, recipe, path, batch_size, trust_model):
    """Predicts the run's test split, streamed, with the Keras model and the export; a failure
    or a disagreement is one `ExportError` line."""
    splits = test_data(recipe)
    expected = tuple(model.inputs[0].shape[1:])
    if any(e is not None and e != d for e, d in zip(expected, splits.info.input_shape)):
        raise ExportError(f"The model takes inputs of shape {expected}, the run's data has "
                          f"{tuple(splits.info.input_shape)}; nothing was exported. Received: {result.path}")
    reference, exported, labels = [], [], []
    try:
        served = _export_predictor(path, result.format, batch_size, trust_model)
        for x, y in splits.batches("test", batch_size).as_numpy_iterator():
            reference.append(predict(model, x, batch_size))
            exported.append(served(x))
            labels.append(y)
    except Exception as e:  # noqa: BLE001 - whatever the runtime raised, the user gets one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"The exported model failed its check on the test split ({first}); nothing was "
                          f"exported. Received: {result.path}") from None
    reference, exported, y = np.concatenate(reference), np.concatenate(exported), np.concatenate(labels)
    result.keras_accuracy = round(accuracy(reference, y), 6)
    result.exported_accuracy = round(accuracy(exported, y), 6)
    result.max_abs_diff = float(np.abs(reference - exported).max())
    if exported.shape != reference.shape or not np.isfinite(exported).all():
        raise ExportError(f"The exported model gives {'non-finite' if exported.shape == reference.shape else 'misshaped'} "
                          f"probabilities on the test split; nothing was exported. Received: {result.path}")


class ExportError(UserError):
    """An export that failed its check: one line, and the earlier export left as it was."""


def _export_predictor(path, format, batch_size, trust_model=False):
    """`fn(x) -> probabilities float64` of an export, loaded once."""
    if format == "tflite":
        return lambda x: tflite_predict(path, x, batch_size)
    if format == "savedmodel":
        loaded = tf.saved_model.load(path)  # held by the closure: its variables die with it

        def serve(x):
            outs = [np.asarray(loaded.serve(tf.constant(x[start:start + batch_size])))
                    for start in range(0, len(x), batch_size)]
            return np.concatenate(outs).astype("float64")

        return serve
    # The .keras export holds whatever code the run's model held: read it back the same way.
    model = load_model_file(path, trust_model=trust_model)
    return lambda x: np.asarray(model.predict(x, batch_size=batch_size, verbose=0), "float64")
