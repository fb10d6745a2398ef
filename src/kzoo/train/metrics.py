"""The metrics a recipe's `metrics = [...]` names, as thin wrappers over Keras's own that take
integer labels and soft labels (MixUp/CutMix training batches: the class is the largest entry),
registered so a saved model carries them.

Every run logs `accuracy`; `metrics` adds the others, each logged per epoch for training and
validation (`val_<name>`) and in `metrics.json` as `test_<name>`. The multi-worker step, which
cannot use compiled metrics, sums `metric_stats` over the replicas and reads the same values
from them with `metric_values`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kzoo.errors import RecipeError


def class_labels(y_true, y_pred):
    """Integer labels of shape `(batch,)` from integer labels (`(batch,)` or `(batch, 1)`) or
    soft labels (`(batch, num_classes)`: their argmax)."""
    y_true = ops.convert_to_tensor(y_true)
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes != 1:
        return ops.argmax(y_true, axis=-1)
    return ops.reshape(y_true, (-1,))


class _SoftLabels:
    """Mixin: `update_state` reads soft labels as their argmax class."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        return super().update_state(class_labels(y_true, y_pred), y_pred, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="kzoo")
class Accuracy(_SoftLabels, keras.metrics.SparseCategoricalAccuracy):
    """The fraction of examples whose most probable class is their label (a soft label's
    largest entry). Other arguments as for `keras.metrics.SparseCategoricalAccuracy`.

    Args:
        name: the log key. Defaults to `"accuracy"`.
    """

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)


@keras.saving.register_keras_serializable(package="kzoo")
class TopKAccuracy(_SoftLabels, keras.metrics.SparseTopKCategoricalAccuracy):
    """The fraction of examples whose label is among the `k` most probable classes.

    Args:
        k: how many classes count. Defaults to `5`.
        name: the log key. Defaults to `"top{k}"`.
    """

    def __init__(self, k=5, name=None, **kwargs):
        super().__init__(k=k, name=name or f"top{k}", **kwargs)


@keras.saving.register_keras_serializable(package="kzoo")
class MacroF1(keras.metrics.F1Score):
    """The unweighted mean over classes of each class's F1 score (2PR / (P + R)), the predicted
    class being the most probable one; a class never predicted nor present counts 0.

    Args:
        name: the log key. Defaults to `"macro_f1"`.

    Reference:
        Van Rijsbergen, "Information Retrieval", 1979 (the F-measure); Keras's `F1Score`.
    """

    def __init__(self, name="macro_f1", **kwargs):
        kwargs.pop("average", None)
        kwargs.pop("threshold", None)
        super().__init__(average="macro", threshold=None, name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        labels = ops.cast(class_labels(y_true, y_pred), "int32")
        one_hot = ops.one_hot(labels, y_pred.shape[-1], dtype=self.dtype)
        return super().update_state(one_hot, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("average", None)
        config.pop("threshold", None)
        return config


# The names a recipe may list, and the Keras metric each one compiles.
METRICS = {
    "accuracy": lambda: Accuracy(),
    "top3": lambda: TopKAccuracy(3),
    "top5": lambda: TopKAccuracy(5),
    "macro_f1": lambda: MacroF1(),
}


def validate_metric_names(names) -> list:
    """Checks a recipe's `metrics` list; returns it without repeats, `accuracy` first."""
    if not isinstance(names, (list, tuple)) or any(not isinstance(n, str) for n in names):
        raise RecipeError(f"metrics must be a list of names ({', '.join(METRICS)}). Received: metrics={names!r}")
    for name in names:
        if name not in METRICS:
            raise RecipeError(f"Unknown metric '{name}' in metrics. Valid: {', '.join(METRICS)}. "
                              f"Received: metrics={list(names)}")
    return list(dict.fromkeys(["accuracy", *names]))


def metric_names(recipe) -> list:
    """The metrics a run of `recipe` logs: `accuracy`, then the recipe's others in its order."""
    return list(dict.fromkeys(["accuracy", *recipe.metrics]))


def build_metrics(recipe) -> list:
    """Fresh Keras metric objects for `model.compile`, one per name of `metric_names`."""
    return [METRICS[name]() for name in metric_names(recipe)]


def metric_stats(y_true, probs, names) -> dict:
    """Sums over a batch from which `metric_values` computes the metrics `names`: they add up
    over batches and over replicas (`count`, `correct`, `top<k>` hits, the confusion matrix)."""
    probs = ops.convert_to_tensor(probs)
    labels = ops.cast(class_labels(y_true, probs), "int32")
    predicted = ops.cast(ops.argmax(probs, axis=-1), "int32")
    stats = {"count": ops.cast(ops.shape(labels)[0], "float32"),
             "correct": ops.sum(ops.cast(ops.equal(labels, predicted), "float32"))}
    for name in names:
        if name.startswith("top"):
            k = int(name[3:])
            hits = ops.in_top_k(labels, ops.cast(probs, "float32"), min(k, probs.shape[-1]))
            stats[name] = ops.sum(ops.cast(hits, "float32"))
        elif name == "macro_f1":
            num_classes = probs.shape[-1]
            stats["confusion"] = ops.matmul(ops.transpose(ops.one_hot(labels, num_classes, dtype="float32")),
                                            ops.one_hot(predicted, num_classes, dtype="float32"))
    return stats


def metric_values(names, stats) -> dict:
    """`{name: value}` of the metrics `names` from `metric_stats` summed over batches."""
    stats = {k: np.asarray(ops.convert_to_numpy(v), "float64") for k, v in stats.items()}
    count = max(float(stats["count"]), 1.0)
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = float(stats["correct"]) / count
        elif name.startswith("top"):
            out[name] = float(stats[name]) / count
        elif name == "macro_f1":
            confusion = stats["confusion"]
            true_positive = np.diag(confusion)
            denominator = confusion.sum(0) + confusion.sum(1)  # 2TP + FP + FN
            f1 = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1e-12), 0.0)
            out[name] = float(f1.mean())
    return out
