"""Evaluating finished runs: a single-run report, ensembles, test-time augmentation and
Monte-Carlo dropout.

Everything works from a run directory (`recipe.toml` + `model.keras`): the recipe names the
dataset and its seeded split, so the test split is rebuilt exactly as the run saw it
(`kzoo.train.RunData`), and streamed batch by batch; the model carries every transformation
training applied to its inputs, so it reads the split as the dataset gives it.

Example:
    >>> report = kzoo.evaluate.evaluate_run("runs/cnn-digits-0", tta=8)
    >>> report["test_accuracy"], report["tta"]["accuracy"]
    >>> ens = kzoo.evaluate.evaluate_ensemble(["runs/a", "runs/b", "runs/c"])
    >>> ens["ensemble"]["test_accuracy"], ens["mean_member_accuracy"]
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from kzoo.calibration import expected_calibration_error, reliability_bins
from kzoo.cpu_threads import apply_threads
from kzoo.errors import RunDirError, UserError
from kzoo.plots_eval import most_confident_errors, plot_confusion, plot_errors, plot_reliability
from kzoo.recipes.loader import load as load_recipe
from kzoo.report import write_report
from kzoo.runs import atomic_write
from kzoo.safe_load import load_model_file
from kzoo.train.metrics import metric_names, metric_stats, metric_values
from kzoo.train.session import RunData
from kzoo.zoo.layers import TrainingOnly

EVAL_FILE = "eval.json"
_EPS = 1e-7  # Keras's probability clip in sparse categorical cross-entropy


# -- Loading ---------------------------------------------------------------------------------


def load_run(run_dir: str, trust_model: bool = False):
    """Reads a run directory's recipe and trained model.

    The model goes through `kzoo.safe_load`: a `model.keras` holding Python code (a `Lambda`
    layer) is refused with one line unless `trust_model` (the CLI's `--trust-model`).

    Args:
        run_dir: the run directory (`recipe.toml`, `model.keras`).
        trust_model: let Keras rebuild Python code from the model file. Defaults to `False`.

    Returns:
        `(recipe, model)`: the validated `Recipe` and the Keras model (not compiled).
    """
    if not os.path.isdir(run_dir):
        raise RunDirError(f"No such run directory: {run_dir}")
    for name in ("recipe.toml", "model.keras"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise RunDirError(f"{run_dir} holds no finished run: {name} is missing. Received: {run_dir}")
    recipe = load_recipe(os.path.join(run_dir, "recipe.toml"))
    apply_threads(recipe)  # the pools the run trained with, so the test metrics come out the same
    model = load_model_file(os.path.join(run_dir, "model.keras"), trust_model=trust_model)
    return recipe, model


def test_data(recipe, data: str | None = None):
    """The recipe's dataset (or `data` with the recipe's split settings) as `DataSplits`, read
    without a cache: its `test` split is the one the run was tested on."""
    return RunData(recipe, data).data


def test_split(recipe, data: str | None = None):
    """The test split of `test_data` in memory, as a `kzoo.data.splits.ArraySplits` whose
    `x_test`, `y_test` and `info` are filled (the other splits come back empty)."""
    return test_data(recipe, data).to_arrays(("test",))


def check_inputs(model, shape, where: str):
    """Refuses, in one line naming `where`, inputs of one example's `shape` the model cannot take."""
    expected = tuple(model.inputs[0].shape[1:])
    shape = tuple(shape)
    if len(shape) != len(expected) or any(e is not None and e != d for e, d in zip(expected, shape)):
        raise UserError(f"{where}: the model takes inputs of shape {expected}, the data has "
                        f"{shape}. Received: data shape={shape}")


def predict_split(model, splits, split: str = "test", batch_size: int = 256, tta: int = 0, seed: int = 0):
    """`(probabilities float64, labels)` of a `DataSplits`' split, streamed in batches; with
    `tta > 1`, also the test-time augmentation's probabilities (`(probs, labels, tta_probs)`)."""
    probs, labels, views = [], [], []
    for x, y in splits.batches(split, batch_size).as_numpy_iterator():
        probs.append(predict(model, x, batch_size))
        labels.append(y)
        if tta and tta > 1:
            views.append(tta_predict(model, x, tta, seed, batch_size))
    out = (np.concatenate(probs), np.concatenate(labels).astype("int64"))
    return (*out, np.concatenate(views)) if tta and tta > 1 else out


def gather(splits, positions, split: str = "test"):
    """The examples of `split` at `positions` (a few: the plots' most confident errors), as
    float32 numpy in the order given, read in one streamed pass."""
    positions = [int(i) for i in positions]
    if not positions:
        return np.zeros((0, *splits.info.input_shape), "float32")
    wanted, found, offset = set(positions), {}, 0
    for x, _ in splits.batches(split).as_numpy_iterator():
        for i in wanted.intersection(range(offset, offset + len(x))):
            found[i] = x[i - offset]
        offset += len(x)
        if len(found) == len(wanted):
            break
    return np.stack([found[i] for i in positions]).astype("float32")


# -- Predictions -----------------------------------------------------------------------------


def predict(model, x, batch_size: int = 256) -> np.ndarray:
    """Predicted probabilities in inference mode, as float64 numpy."""
    return np.asarray(model.predict(np.asarray(x, "float32"), batch_size=batch_size, verbose=0), "float64")


def augmentation_layers(model) -> list:
    """The model's random augmentation layers (`augment_*` or Keras `Random*` layers), in order.

    They are identity at inference; test-time augmentation runs copies of them in training mode.
    """
    return [layer for layer in model.layers
            if layer.name.startswith("augment_") or type(layer).__name__.startswith("Random")]


def tta_predict(model, x, views: int, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Averages predicted probabilities over `views` views of each input: the input itself and
    `views - 1` random augmentations drawn by the model's own augmentation layers.

    The layers are rebuilt from their configs with seeds `seed + view`, so the views are the
    same on every call and the model's own random state is left alone.

    Args:
        views: number of views, at least 1 (1 is plain prediction).
        seed: base seed of the augmentations. Defaults to `0`.

    Reference:
        Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
        Networks", NeurIPS 2012 (averaging over crops and flips at test time).
    """
    if int(views) < 1:
        raise UserError(f"--tta takes the number of views, at least 1. Received: tta={views}")
    layers = augmentation_layers(model)
    if views > 1 and not layers:
        raise UserError("--tta needs the recipe's augmentation, and this model has none "
                        f"(set [data.augment] when training). Received: tta={views}")
    x = np.asarray(x, "float32")
    total = predict(model, x, batch_size)
    for view in range(1, int(views)):
        fresh = [_reseeded(layer, seed + view) for layer in layers]
        augmented = []
        for start in range(0, len(x), 1024):
            batch = x[start:start + 1024]
            for layer in fresh:
                batch = layer(batch, training=True)
            augmented.append(np.asarray(batch))
        total += predict(model, np.concatenate(augmented), batch_size)
    return total / int(views)


def _reseeded(layer, seed: int):
    """A fresh copy of a random layer drawing from `seed` (the layer itself if it takes no seed)."""
    if isinstance(layer, TrainingOnly):
        return TrainingOnly(_reseeded(layer.layer, seed), name=layer.name)
    config = layer.get_config()
    if "seed" not in config:
        return layer
    return type(layer).from_config({**config, "seed": seed})


def _is_dropout(layer) -> bool:
    return "dropout" in type(layer).__name__.lower()


def mc_dropout_model(model):
    """A model sharing `model`'s layers and weights in which only the dropout layers run in
    training mode; batch normalization and augmentation stay in inference mode.

    Call it as `stochastic(x)`: an explicit `training=` on the call would reach every layer.
    """
    if not any(_is_dropout(layer) for layer in _all_layers(model)):
        raise UserError("--mc-dropout needs a model with dropout (set model.dropout > 0 when "
                        f"training). Received: model={model.name}")

    def call(layer, *args, **kwargs):
        # Recorded in the graph, so it holds unless the model is called with an explicit
        # `training=`. Every other layer is pinned to inference: Keras's random augmentation
        # layers default to training=True.
        if getattr(layer, "_call_has_training_arg", False):
            kwargs["training"] = _is_dropout(layer)
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call,
                                    recursive=True)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def mc_dropout_predict(model, x, samples: int, seed: int = 0, batch_size: int = 256) -> dict:
    """Monte-Carlo dropout: `samples` stochastic forward passes with dropout on.

    Returns the mean probabilities and, per example, the predictive entropy `H[mean p]`, the
    mutual information `H[mean p] - mean H[p]` (the part of the uncertainty due to the weights)
    and the standard deviation of the predicted class's probability across passes.

    Reference:
        Gal and Ghahramani, "Dropout as a Bayesian Approximation: Representing Model
        Uncertainty in Deep Learning", ICML 2016. https://arxiv.org/abs/1506.02142
    """
    if int(samples) < 2:
        raise UserError(f"--mc-dropout takes the number of passes, at least 2. Received: mc_dropout={samples}")
    stochastic = mc_dropout_model(model)
    # Restart every dropout layer's random stream from `seed` (and restore it afterwards), so
    # the masks are the same on every call and the model's own state is left as it was.
    generators = [layer.seed_generator for layer in _all_layers(model)
                  if _is_dropout(layer) and getattr(layer, "seed_generator", None) is not None]
    saved = [np.asarray(g.state.value) for g in generators]
    for i, g in enumerate(generators):
        g.state.assign(np.array([seed + 7919 * i, 0], dtype=saved[i].dtype))
    x = np.asarray(x, "float32")
    total = np.zeros((len(x), int(model.outputs[0].shape[-1])))
    total_sq = np.zeros_like(total)
    total_entropy = np.zeros(len(x))
    try:
        for _ in range(int(samples)):
            # No `training=` here: an explicit value would override the dropout layers' own.
            p = np.concatenate([np.asarray(stochastic(x[i:i + batch_size]), "float64")
                                for i in range(0, len(x), batch_size)])
            total += p
            total_sq += p * p
            total_entropy += _entropy(p)
    finally:
        for g, state in zip(generators, saved):
            g.state.assign(state)
    mean = total / samples
    std = np.sqrt(np.maximum(total_sq / samples - mean * mean, 0.0))
    entropy = _entropy(mean)
    predicted = mean.argmax(axis=1)
    return {"probs": mean, "entropy": entropy, "mutual_information": entropy - total_entropy / samples,
            "std": std[np.arange(len(x)), predicted]}


def _entropy(p):
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)


# -- Metrics ---------------------------------------------------------------------------------


def accuracy(probs, labels) -> float:
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean())


def log_loss(probs, labels) -> float:
    """Mean cross-entropy, clipped as Keras clips it."""
    p = np.asarray(probs)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, _EPS, 1.0)).mean())


def classification_metrics(probs, labels, class_names, bins: int = 15) -> dict:
    """Accuracy, loss, calibration, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels).reshape(-1)
    n = len(class_names)
    predicted = np.asarray(probs).argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(n)), zero_division=0)
    return {
        "test_accuracy": round(accuracy(probs, labels), 6),
        "test_loss": round(log_loss(probs, labels), 6),
        "ece": round(expected_calibration_error(probs, labels, bins), 6),
        "bins": int(bins),
        "macro_f1": round(float(np.mean(f1)), 6),
        "per_class": [{"class": str(class_names[i]), "precision": round(float(precision[i]), 6),
                       "recall": round(float(recall[i]), 6), "f1": round(float(f1[i]), 6),
                       "support": int(support[i])} for i in range(n)],
        "confusion": confusion_matrix(labels, predicted, labels=list(range(n))).tolist(),
    }


def write_plots(out_dir: str, probs, x, labels, class_names, bins: int = 15, title: str = "") -> list[str]:
    """Writes confusion.png, reliability.png and, for image inputs, errors.png; returns the names.
    `x` is the inputs (numpy) or the `DataSplits` whose test split they are (only the examples
    errors.png shows are read again)."""
    from sklearn.metrics import confusion_matrix

    labels = np.asarray(labels).reshape(-1)
    n = len(class_names)
    matrix = confusion_matrix(labels, np.asarray(probs).argmax(axis=1), labels=list(range(n)))
    prefix = f"{title}: " if title else ""
    plot_confusion(matrix, class_names, os.path.join(out_dir, "confusion.png"),
                   title=f"{prefix}confusion, accuracy {accuracy(probs, labels):.4f}")
    rel = reliability_bins(probs, labels, bins)
    plot_reliability(rel, os.path.join(out_dir, "reliability.png"), title=f"{prefix}reliability, ECE {rel.ece:.4f}")
    written = ["confusion.png", "reliability.png"]
    if not isinstance(x, np.ndarray):  # DataSplits: read back only the examples shown
        shown = most_confident_errors(probs, labels, 16)
        x, labels, probs = gather(x, shown), labels[shown], np.asarray(probs)[shown]
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        plot_errors(x, labels, probs, class_names, os.path.join(out_dir, "errors.png"),
                    title=f"{prefix}most confidently wrong (true \u2192 predicted, confidence)")
        written.append("errors.png")
    return written


# -- Single run and ensembles ----------------------------------------------------------------


def _summary(result: dict, keys=("test_accuracy", "test_loss", "ece")) -> dict:
    return {k: result[k] for k in keys}


def evaluate_run(run_dir: str, data: str | None = None, tta: int = 0, mc_dropout: int = 0,
                 bins: int = 15, seed: int = 0, batch_size: int = 256, write: bool = True,
                 trust_model: bool = False) -> dict:
    """Evaluates one finished run on its test split.

    Args:
        run_dir: the run directory (`recipe.toml`, `model.keras`).
        data: evaluate on this dataset (name, folder or .npz) with the recipe's split settings
            instead of the recipe's own. Defaults to the recipe's.
        tta: number of test-time augmentation views (0 or 1: none). Defaults to `0`.
        mc_dropout: number of Monte-Carlo dropout passes (0: none). Defaults to `0`.
        bins: confidence bins of the calibration error. Defaults to `15`.
        seed: seed of the augmentations and dropout masks. Defaults to `0`.
        write: write eval.json, the plots and report.html into the run directory. Defaults to `True`.
        trust_model: load a model file holding Python code (`Lambda` layers); only for files
            you trust. Defaults to `False`.

    Returns:
        A dict as in `eval.json`: accuracy, loss, ECE, per-class metrics, confusion matrix,
        and `tta` / `mc_dropout` sections when asked for.
    """
    recipe, model = load_run(run_dir, trust_model)
    splits = test_data(recipe, data)
    info = splits.info
    check_inputs(model, info.input_shape, run_dir)
    if tta:
        tta_predict(model, splits.sample(1)[0], tta)  # validates the argument before any work
    predicted = predict_split(model, splits, "test", batch_size, tta, seed)
    probs, y = predicted[:2]
    result = {"run": run_dir, "recipe": recipe.name, "dataset": info.name, "num_test": int(len(y)),
              **classification_metrics(probs, y, info.class_names, bins)}
    # The recipe's other metrics, as the run computed them into metrics.json (test_<name>).
    others = metric_names(recipe)[1:]
    if others:
        values = metric_values(others, metric_stats(y, probs.astype("float32"), others))
        result.update({f"test_{name}": round(value, 6) for name, value in values.items()})
    if tta and tta > 1:
        tta_probs = predicted[2]
        result["tta"] = {"views": int(tta), "accuracy_without": result["test_accuracy"],
                         "loss_without": result["test_loss"], "accuracy": round(accuracy(tta_probs, y), 6),
                         "loss": round(log_loss(tta_probs, y), 6)}
    if mc_dropout:  # every pass over the same masks' stream: the split in memory
        mc = mc_dropout_predict(model, splits.arrays_of("test")[0], mc_dropout, seed, batch_size)
        correct = mc["probs"].argmax(axis=1) == y
        result["mc_dropout"] = {
            "samples": int(mc_dropout),
            "accuracy": round(accuracy(mc["probs"], y), 6),
            "loss": round(log_loss(mc["probs"], y), 6),
            "mean_entropy": round(float(mc["entropy"].mean()), 6),
            "mean_mutual_information": round(float(mc["mutual_information"].mean()), 6),
            "mean_std": round(float(mc["std"].mean()), 6),
            "entropy_correct": round(float(mc["entropy"][correct].mean()), 6) if correct.any() else None,
            "entropy_wrong": round(float(mc["entropy"][~correct].mean()), 6) if (~correct).any() else None,
        }
    if write:
        result["plots"] = write_plots(run_dir, probs, splits, y, info.class_names, bins, recipe.name)
        atomic_write(os.path.join(run_dir, EVAL_FILE), json.dumps(result, indent=2) + "\n")
        write_report(run_dir)
    return result


def evaluate_ensemble(run_dirs, data: str | None = None, tta: int = 0, bins: int = 15, seed: int = 0,
                      batch_size: int = 256, out: str | None = None, trust_model: bool = False) -> dict:
    """Evaluates several runs and the ensemble that averages their predicted probabilities.

    The runs must share the test split (same dataset and split settings, or `data`).

    Args:
        run_dirs: two or more run directories.
        tta: test-time augmentation views for every member (0: none). Defaults to `0`.
        out: a directory for ensemble.json and the ensemble's plots. Defaults to none.
        trust_model: load model files holding Python code (`Lambda` layers); only for files
            you trust. Defaults to `False`.

    Returns:
        `{"members": [...], "mean_member_accuracy": ..., "ensemble": {...}}`, and with `tta`
        the same figures with augmentation under `"tta"` keys.
    """
    run_dirs = list(run_dirs)
    if tta and int(tta) < 1:
        raise UserError(f"--tta takes the number of views, at least 1. Received: tta={tta}")
    if len(run_dirs) < 2:
        raise UserError(f"An ensemble needs at least 2 runs. Received: {len(run_dirs)} run")
    members, probs_all, tta_all = [], [], []
    splits = key = y = info = None
    for run_dir in run_dirs:
        recipe, model = load_run(run_dir, trust_model)
        if splits is None:  # the members share one split, opened once and streamed for each
            splits, key = test_data(recipe, data), _split_key(recipe, data)
            info = splits.info
        elif _split_key(recipe, data) != key:
            raise UserError(f"{run_dir} is tested on another split than {run_dirs[0]}; an ensemble needs "
                            f"one test split (same dataset and split settings). Received: {run_dir}")
        check_inputs(model, info.input_shape, run_dir)
        predicted = predict_split(model, splits, "test", batch_size, tta, seed)
        probs = predicted[0]
        if y is None:
            y = predicted[1]
        probs_all.append(probs)
        member = {"run": run_dir, "recipe": recipe.name, "seed": recipe.seed,
                  **_summary(classification_metrics(probs, y, info.class_names, bins))}
        if tta and tta > 1:
            tta_probs = predicted[2]
            tta_all.append(tta_probs)
            member["tta_accuracy"] = round(accuracy(tta_probs, y), 6)
        members.append(member)
        del model
    ensemble_probs = np.mean(probs_all, axis=0)
    ensemble = classification_metrics(ensemble_probs, y, info.class_names, bins)
    result = {
        "members": members,
        "mean_member_accuracy": round(float(np.mean([m["test_accuracy"] for m in members])), 6),
        "best_member_accuracy": round(float(np.max([m["test_accuracy"] for m in members])), 6),
        "ensemble": {**_summary(ensemble), "macro_f1": ensemble["macro_f1"], "size": len(members)},
        "dataset": info.name,
        "num_test": int(len(y)),
    }
    if tta_all:
        tta_ensemble = np.mean(tta_all, axis=0)
        result["tta"] = {"views": int(tta),
                         "mean_member_accuracy": round(float(np.mean([m["tta_accuracy"] for m in members])), 6),
                         "ensemble_accuracy": round(accuracy(tta_ensemble, y), 6)}
    if out:
        os.makedirs(out, exist_ok=True)
        result["plots"] = write_plots(out, ensemble_probs, splits, y, info.class_names, bins,
                                      f"ensemble of {len(members)}")
        atomic_write(os.path.join(out, "ensemble.json"), json.dumps(result, indent=2) + "\n")
    return result


def _split_key(recipe, data):
    """What decides a run's test split: its dataset and split settings (the `DataSpec`'s fields
    that choose examples and decode them)."""
    d = recipe.data
    return (data or d.dataset, d.data_dir or None, d.validation_split, d.test_split, d.split_seed,
            tuple(d.image_size or ()))
