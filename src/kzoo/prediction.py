"""Predicting new inputs with a trained model: image files, folders of them, or `.npz` arrays.

A run's `model.keras` takes the raw inputs at the size and value range of the run's data (all
preprocessing is inside the model), so images are decoded exactly as the folder source decodes
them (`kzoo.data.images.decoder`), at the height, width and channel count of the model's input.
Folders are read recursively and streamed through tf.data in batches; a file that cannot be read
is skipped and named in one warning, and the rest are predicted.

Example:
    >>> preds = kzoo.predict("runs/cnn-digits-0", ["new-photos/"], top=3)
    >>> preds.rows[0]["label"], preds.rows[0]["probability"]
    >>> kzoo.prediction.write_csv(preds, "preds.csv")
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from kzoo.data.core import resolve_source
from kzoo.data.images import IMAGE_EXTENSIONS, decoder, image_header, list_folder
from kzoo.errors import DataError, UserError
from kzoo.evaluate import check_inputs, load_run, tta_predict
from kzoo.runs import write_csv as _write_rows
from kzoo.safe_load import load_model_file

NPZ_KEYS = ("x", "x_test", "x_train")  # the array an .npz is predicted from: the first present
MODEL_FILES = (".keras", ".h5", ".hdf5")


@dataclass
class Predictions:
    """Predicted probabilities of a list of inputs, in the order they were read.

    `paths[i]` names input `i` (a file, or `file.npz[row]`), `probabilities[i]` is the model's
    output for it, `class_names[j]` names output `j`; `skipped` lists the files that could not
    be read; `top` is the number of top-K columns `rows` adds.
    """

    paths: list
    probabilities: np.ndarray
    class_names: list
    skipped: list = field(default_factory=list)
    top: int = 0

    @property
    def columns(self) -> list[str]:
        extra = [f"top{k}_{what}" for k in range(1, self.top + 1) for what in ("label", "probability")]
        return ["path", "label", "probability", *extra]

    @property
    def rows(self) -> list[dict]:
        """One dict per input: `path`, `label`, `probability` (of that label), then
        `top1_label`, `top1_probability`, ... `topK_probability`."""
        rows = []
        order = np.argsort(-self.probabilities, axis=1, kind="stable") if len(self.paths) else []
        for path, p, ranked in zip(self.paths, self.probabilities, order):
            row = {"path": path, "label": self.class_names[ranked[0]], "probability": round(float(p[ranked[0]]), 6)}
            for k, j in enumerate(ranked[:self.top], start=1):
                row[f"top{k}_label"] = self.class_names[j]
                row[f"top{k}_probability"] = round(float(p[j]), 6)
            rows.append(row)
        return rows


def predict(model_or_run, paths, top: int = 0, tta: int = 0, batch_size: int = 256, trust_model: bool = False,
            seed: int = 0, warn: bool = True) -> Predictions:
    """Predicts the classes of image files, folders of images and `.npz` arrays.

    Images are decoded as the folder source decodes a run's data (uint8 pixels, grayscale copied
    into R, G and B, alpha dropped) and resized to the model's input height and width. Folders
    are searched recursively for `.png`, `.jpg`, `.jpeg`, `.bmp` and `.gif` files and streamed in
    batches. An `.npz` is predicted from its array `x`, else `x_test`, else `x_train`; its rows
    are named `file.npz[i]`. Unreadable image files are skipped and named in one warning.

    Args:
        model_or_run: a run directory, a `.keras` model file, or a Keras model. A run's class
            names come from its `metrics.json` (or its folder dataset); otherwise the classes
            are named by index.
        paths: image files, folders and `.npz` files (a string or a list of them).
        top: add the K most probable classes to each row. Defaults to `0`.
        tta: average over this many views, the input and `tta - 1` draws of the model's own
            augmentation layers (0 or 1: none). Defaults to `0`.
        batch_size: inputs decoded and predicted at a time. Defaults to `256`.
        trust_model: load a model file holding Python code (`Lambda` layers); only for files
            you trust. Defaults to `False`.
        seed: seed of the test-time augmentations. Defaults to `0`.
        warn: warn about skipped files (they are in `skipped` either way). Defaults to `True`.

    Returns:
        A `Predictions`: `paths`, `probabilities` (one row per input), `class_names`,
        `skipped` and `rows` (the CSV's rows as dicts).

    Example:
        >>> preds = kzoo.predict("runs/cnn-digits-0", ["photos/", "more.npz"], top=2)
        >>> for row in preds.rows[:3]:
        ...     print(row["path"], row["label"], row["probability"])
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise UserError("Name at least one image file, folder or .npz file to predict. Received: no paths")
    if int(batch_size) < 1:
        raise UserError(f"--batch-size must be at least 1. Received: batch_size={batch_size}")
    model, class_names = _load(model_or_run, trust_model)
    if not 0 <= int(top) <= len(class_names):
        raise UserError(f"--top must be between 0 and the number of classes ({len(class_names)}). "
                        f"Received: top={top}")
    views = int(tta) or 1  # tta_predict refuses a bad count, or views without augmentation layers
    sources, skipped = _list_inputs(paths)
    names, probs = [], []
    for source in sources:
        for batch_names, x in _batches(model, source, int(batch_size), skipped):
            names += batch_names
            probs.append(tta_predict(model, x, views, seed, int(batch_size)))
    if not names:
        raise DataError(f"None of the {len(skipped)} image file(s) could be read. Received: {_shown(skipped)}")
    if skipped and warn:
        warnings.warn(f"kzoo: {skipped_message(skipped)}", stacklevel=2)
    return Predictions(names, np.concatenate(probs), class_names, skipped, int(top))


def write_csv(predictions: Predictions, path: str, overwrite: bool = False):
    """Writes `predictions.rows` as CSV (`path,label,probability`, then the top-K columns),
    atomically; an existing file is refused unless `overwrite`.

    Args:
        predictions: what `predict` returned.
        path: the CSV file.
        overwrite: replace an existing file. Defaults to `False`.
    """
    check_output(path, overwrite)
    _write_rows(os.fspath(path), predictions.rows, predictions.columns)


def check_output(path: str, overwrite: bool = False):
    """Refuses an output file that exists (unless `overwrite`) or a folder that does not."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"--out names a folder; give a file name such as preds.csv. Received: out={path}")
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite (Python: overwrite=True) to replace it. "
                        f"Received: out={path}")
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise UserError(f"No such folder for --out: {folder}. Received: out={path}")


def skipped_message(skipped) -> str:
    """`skipped N unreadable file(s): a.png, b.jpg` (the first ten named)."""
    return f"skipped {len(skipped)} unreadable file(s): {_shown(skipped)}"


def _shown(files, limit: int = 10) -> str:
    more = f", ... ({len(files) - limit} more)" if len(files) > limit else ""
    return ", ".join(str(f) for f in files[:limit]) + more


# -- The model and its class names -----------------------------------------------------------


def _load(model_or_run, trust_model):
    """`(model, class_names)` of a run directory, a model file or a model."""
    if not isinstance(model_or_run, (str, os.PathLike)):
        model = model_or_run
        return model, _index_names(model)
    where = os.fspath(model_or_run)
    if os.path.isdir(where):
        recipe, model = load_run(where, trust_model)
        return model, _run_class_names(where, recipe, model)
    if os.path.isfile(where) and where.endswith(MODEL_FILES):
        model = load_model_file(where, trust_model=trust_model)
        return model, _index_names(model)
    raise UserError(f"No such run directory or model file (.keras): {where}. Received: {where}")


def _num_classes(model) -> int:
    return int(model.outputs[0].shape[-1])


def _index_names(model) -> list[str]:
    return [str(i) for i in range(_num_classes(model))]


def _run_class_names(run_dir, recipe, model) -> list[str]:
    """The run's class names: `metrics.json`'s, else its folder dataset's class folders, else
    index names; any list whose length is not the model's number of outputs is passed over."""
    n = _num_classes(model)
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            names = json.load(f).get("class_names")
        if isinstance(names, list) and len(names) == n:
            return [str(c) for c in names]
    except (OSError, ValueError, AttributeError):
        pass
    target, _, source = resolve_source(str(recipe.data.dataset))
    if source == "folder" and os.path.isdir(target):
        try:
            names = list_folder(target, warn=False).class_names
        except DataError:
            names = []
        if len(names) == n:
            return names
    return _index_names(model)


def _input_shape(model) -> tuple:
    return tuple(None if d is None else int(d) for d in model.inputs[0].shape[1:])


# -- Inputs ----------------------------------------------------------------------------------


def _list_inputs(paths):
    """`(sources, skipped)`: each source is `("npz", path)` or `("images", [files])`, in the
    order named (a folder's files sorted); `skipped` holds image files whose header is not that
    of a complete image (`kzoo.data.images.image_header`)."""
    sources, skipped, missing, empty = [], [], [], []
    for path in (os.fspath(p) for p in paths):
        if os.path.isfile(path) and path.lower().endswith(".npz"):
            sources.append(("npz", path))
            continue
        if os.path.isdir(path):
            files = sorted(os.path.join(folder, f) for folder, _, names in os.walk(path) for f in names
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                empty.append(path)
        elif os.path.isfile(path):
            files = [path]
        else:
            missing.append(path)
            continue
        headers = [image_header(f) for f in files]
        readable = [f for f, header in zip(files, headers) if header is not None]
        skipped += [f for f, header in zip(files, headers) if header is None]
        if readable:
            if sources and sources[-1][0] == "images":
                sources[-1][1].extend(readable)
            else:
                sources.append(("images", readable))
    if missing:
        raise DataError(f"No such file or folder: {', '.join(missing)}. Received: {missing[0]}")
    if empty:
        raise DataError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(empty)}. "
                        f"Received: {empty[0]}")
    if not sources:
        raise DataError(f"None of the {len(skipped)} image file(s) could be read. Received: {_shown(skipped)}")
    return sources, skipped


def _batches(model, source, batch_size, skipped):
    """`(names, x)` batches of one source; image files that fail to decode go to `skipped`."""
    kind, what = source
    if kind == "npz":
        x = _npz_array(what)
        check_inputs(model, x.shape[1:], what)
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            yield [f"{what}[{i}]" for i in range(start, start + len(batch))], batch
        return
    yield from _image_batches(model, what, batch_size, skipped)


def _npz_array(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            key = next((k for k in NPZ_KEYS if k in f.files), None)
            if key is None:
                raise DataError(f"{path} holds none of the arrays {', '.join(NPZ_KEYS)}. Received: {sorted(f.files)}")
            x = f[key]
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable .npz file ({str(e).splitlines()[0]}). Received: {path}") from None
    if x.ndim < 1 or not len(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{path}: array {key} must be numeric with at least one row (one per input). "
                        f"Received: dtype={x.dtype}, shape={x.shape}")
    return x


def _image_batches(model, files, batch_size, skipped):
    """Decodes `files` in batches at the model's input size; a file TensorFlow cannot decode is
    dropped from its batch (`ignore_errors`) and recorded in `skipped`, so one damaged file
    never stops the others."""
    import tensorflow as tf

    shape = _input_shape(model)
    if len(shape) != 3 or None in shape or shape[-1] not in (1, 3):
        raise UserError(f"The model takes inputs of shape {shape}; image files need a model taking images "
                        f"(height, width, 1 or 3 channels). Received: model input shape={shape}")
    # Each file travels with its position, so the positions missing from a batch name the files
    # that failed to decode.
    ds = tf.data.Dataset.from_tensor_slices((files, np.arange(len(files), dtype="int64")))
    ds = ds.map(decoder(shape[:2], shape[2]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(batch_size).prefetch(1)
    expected = 0
    for images, positions in ds:
        positions = positions.numpy()
        present = set(positions.tolist())
        skipped += [files[i] for i in range(expected, int(positions[-1])) if i not in present]
        expected = int(positions[-1]) + 1
        yield [files[i] for i in positions], images.numpy()
    skipped += files[expected:]
