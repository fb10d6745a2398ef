"""Loading model and weights files from users without running code from them.

A `.keras` file is a zip holding a JSON config and the weights. Keras's `safe_mode=True`
refuses to turn a config back into Python code (a `Lambda` layer's function is stored as
bytecode); kzoo keeps it on, looks for such layers before Keras does so that the refusal names
the layer and the flag that overrides it, and turns unreadable files into one-line errors.
"""

from __future__ import annotations

import json
import os
import zipfile

import h5py
import keras

import kzoo.zoo  # noqa: F401 - registers kzoo's layers and initializers, for load_model
from kzoo.errors import UserError

TRUST_FLAG = "--trust-model"


class ModelFileError(UserError):
    """A model or weights file that cannot be read, or does not fit the model."""


class UnsafeModelError(ModelFileError):
    """A model file that holds Python code; it loads only when the user says they trust it."""


def add_trust_model_flag(parser):
    """Adds `--trust-model` to a command that loads a user's model file."""
    parser.add_argument(TRUST_FLAG, dest="trust_model", action="store_true",
                        help="allow model files holding Python code (Lambda layers); "
                             "only for files you trust")


def _model_config(path: str):
    """The model's config dict from a `.keras` zip or a legacy `.h5` file, or `None`."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        except (KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
            raise ModelFileError(f"{path} is not a readable .keras model file ({e}). Received: {path}") from None
    if path.endswith((".h5", ".hdf5")):
        try:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
        except OSError as e:
            raise ModelFileError(f"{path} is not a readable HDF5 file ({e}). Received: {path}") from None
        if raw is None:
            return None
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    raise ModelFileError(f"{path} is not a Keras model file (.keras, or legacy .h5). Received: {path}")


def layers_with_code(config) -> list[str]:
    """Names of the layers in a model config that Keras would rebuild by running Python code:
    a `Lambda` layer wrapping a Python lambda (stored as bytecode). A `Lambda` wrapping a
    registered function by name holds no code and is not listed."""
    found = []

    def walk(node, layer):
        if isinstance(node, dict):
            config = node.get("config")
            if isinstance(config, dict) and "class_name" in node and "name" in config:
                layer = config["name"]
            if node.get("class_name") == "__lambda__" or node.get("function_type") == "lambda":
                found.append(layer or "?")  # Keras 3 files, and Keras 2 .h5 files
            for value in node.values():
                walk(value, layer)
        elif isinstance(node, list):
            for value in node:
                walk(value, layer)

    walk(config, None)
    return list(dict.fromkeys(found))


def load_model(path: str, trust_model: bool = False, compile: bool = True, custom_objects=None):
    """Loads a `.keras` model file (or a legacy `.h5` one) without executing code from it.

    Keras's `safe_mode` stays on. A file holding a `Lambda` layer (Python bytecode) is refused
    with `UnsafeModelError` naming the layer, unless `trust_model=True` (the CLI's `--trust-model`).
    kzoo's own layers are registered first, so run directories load in a fresh process.

    Args:
        path: the model file.
        trust_model: the user trusts the file: let Keras rebuild Python code from it. Defaults
            to `False`.
        compile: restore the optimizer and loss too. Defaults to `True`.
        custom_objects: extra classes the file needs, as for `keras.saving.load_model`.

    Example:
        >>> model = kzoo.safe_load.load_model("runs/mlp-digits/model.keras")
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"No such model file: {path}. Received: {path}")
    config = _model_config(path)
    code = layers_with_code(config) if config is not None else []
    if code and not trust_model:
        raise UnsafeModelError(
            f"{path} holds Python code (Lambda layer {', '.join(repr(c) for c in code)}); kzoo does "
            f"not run code from model files. If you trust its source, pass {TRUST_FLAG} "
            f"(Python: trust_model=True). Received: {path}"
        )
    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=compile,
                                       safe_mode=not trust_model)
    except ValueError as e:
        if "safe_mode" in str(e):  # code our scan did not recognize; Keras refused it
            raise UnsafeModelError(
                f"{path} holds Python code that Keras will not load in safe mode. If you trust its "
                f"source, pass {TRUST_FLAG} (Python: trust_model=True). Received: {path}"
            ) from None
        raise ModelFileError(f"Cannot load {path}: {str(e).splitlines()[0]} Received: {path}") from None
    except (OSError, TypeError, KeyError) as e:
        raise ModelFileError(f"Cannot load {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                             f"Received: {path}") from None


def load_model_file(path: str, trust_model: bool = False, compile: bool = False):
    """Loads a user's model given as a `.keras` file or a run directory (its `model.keras`),
    as `load_model` does: code in the file is refused unless `trust_model`.

    This is the one way kzoo's commands read a model file (`kzoo eval`, `kzoo export`,
    `kzoo finetune --backbone`, a recipe's `finetune.backbone`); their `--trust-model` flag is
    `trust_model`. It is an argument, never a recipe field, so a downloaded recipe cannot turn
    it on.

    Args:
        path: a model file, or a run directory holding `model.keras`.
        trust_model: let Keras rebuild Python code (`Lambda` layers) from the file. Defaults
            to `False`.
        compile: restore the optimizer and loss too. Defaults to `False`.

    Example:
        >>> backbone = kzoo.safe_load.load_model_file("runs/cnn-digits-0")
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    return load_model(path, trust_model=trust_model, compile=compile)


def load_weights(model, path: str):
    """Loads the weights of a `.weights.h5` or `.keras` file into `model` (Keras reads only the
    weights of a `.keras` archive here, never its config, so no code runs).

    Args:
        model: a built model with the architecture the weights came from.
        path: the weights file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"No such weights file: {path}. Received: {path}")
    if not path.endswith((".weights.h5", ".keras")):
        raise ModelFileError(f"A weights file must end in .weights.h5 or .keras. Received: {path}")
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"Cannot load {path} into model '{model.name}': {first} Received: {path}") from None
    return model
