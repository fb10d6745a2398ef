"""The one training loss of every path: cross-entropy over integer or soft labels, with label
smoothing and per-class weights (the recipe's `[loss]`), registered so a saved model carries it.

Training batches hold integer labels, or float soft labels of shape `(batch, num_classes)`
where MixUp or CutMix mixed two images; validation and test batches hold integer labels. The
loss takes both, so one compiled model serves every batch, and the multi-worker step calls the
same object.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from kzoo.errors import RecipeError

CLASS_WEIGHTS = ("none", "balanced")


@keras.saving.register_keras_serializable(package="kzoo")
class ClassificationLoss(keras.losses.Loss):
    """Cross-entropy of predicted probabilities against integer labels (shape `(batch,)` or
    `(batch, 1)`) or soft labels (shape `(batch, num_classes)`, rows summing to 1).

    Label smoothing mixes the (one-hot or soft) target with the uniform distribution:
    `target * (1 - label_smoothing) + label_smoothing / num_classes`. A class weight multiplies
    each example's loss by the weight of its class (the soft label's largest entry), and the
    batch's losses are averaged over the batch size, as Keras's `fit(class_weight=...)` does.

    Args:
        label_smoothing: in [0, 1). Defaults to `0.0`.
        class_weight: one weight per class (a list of floats), or `None` for none. Defaults to
            `None`.
        **kwargs: the base loss's arguments (`name`, `reduction`, `dtype`).

    Reference:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
        (label smoothing, https://arxiv.org/abs/1512.00567).

    Example:
        >>> loss = ClassificationLoss(label_smoothing=0.1, class_weight=[2.0, 1.0])
        >>> float(loss([0, 1], [[0.9, 0.1], [0.2, 0.8]]))
    """

    def __init__(self, label_smoothing=0.0, class_weight=None, name="crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(label_smoothing, bool) or not 0 <= float(label_smoothing) < 1:
            raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing}")
        if class_weight is not None:
            class_weight = [float(w) for w in class_weight]
            if not class_weight or any(not math.isfinite(w) or w < 0 for w in class_weight):
                raise ValueError(f"class_weight must be a list of finite numbers >= 0. Received: "
                                 f"class_weight={class_weight}")
        self.label_smoothing = float(label_smoothing)
        self.class_weight = class_weight

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        num_classes = y_pred.shape[-1]
        target = soft_targets(y_true, y_pred)
        weights = None
        if self.class_weight is not None:
            if num_classes != len(self.class_weight):
                raise ValueError(f"class_weight has {len(self.class_weight)} entries for {num_classes} classes. "
                                 f"Received: class_weight={self.class_weight}")
            weights = ops.take(ops.convert_to_tensor(self.class_weight, dtype=y_pred.dtype),
                               ops.argmax(target, axis=-1))
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        loss = keras.losses.categorical_crossentropy(target, y_pred)
        return loss if weights is None else loss * ops.cast(weights, loss.dtype)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "class_weight": self.class_weight}


def is_soft(y_true, y_pred) -> bool:
    """Whether `y_true` holds soft labels (one row of `num_classes` per example) rather than
    integer labels: decided from the static shapes, so a traced step decides once."""
    num_classes = y_pred.shape[-1]
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes != 1


def soft_targets(y_true, y_pred):
    """`y_true` as float rows of `y_pred`'s width: soft labels as they are, integer labels one-hot."""
    y_true = ops.convert_to_tensor(y_true)
    if is_soft(y_true, y_pred):
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)


def class_weights(setting, class_names, train_labels=None) -> list | None:
    """The per-class weights `[loss] class_weight` asks for, in class order, or `None`.

    Args:
        setting: `"none"`, `"balanced"` (`n / (num_classes * count)`, scikit-learn's rule:
            each class then weighs as much in total; a class without training examples gets 1),
            or a table `{class name: weight}` (classes left out weigh 1).
        class_names: the dataset's class names, in label order.
        train_labels: the training split's integer labels (for `"balanced"`). Defaults to `None`.
    """
    if setting is None or setting == "none":
        return None
    names = [str(c) for c in class_names]
    if setting == "balanced":
        counts = np.bincount(np.asarray(train_labels, "int64").reshape(-1), minlength=len(names))[:len(names)]
        total = float(counts.sum())
        return [total / (len(names) * c) if c else 1.0 for c in counts]
    unknown = sorted(str(k) for k in setting if str(k) not in names)
    if unknown:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise RecipeError(f"loss.class_weight names a class the dataset does not have; its classes are {shown}. "
                          f"Received: class_weight.{unknown[0]}={setting[unknown[0]]!r}")
    table = {str(k): float(v) for k, v in setting.items()}
    return [table.get(name, 1.0) for name in names]


def build_loss(recipe, class_names, train_labels=None) -> ClassificationLoss:
    """The recipe's loss (`[loss]`) for a dataset with `class_names` and `train_labels`."""
    cfg = recipe.loss
    return ClassificationLoss(label_smoothing=cfg.label_smoothing,
                              class_weight=class_weights(cfg.class_weight, class_names, train_labels))


def validate_class_weight(value):
    """Checks `[loss] class_weight` at load: `"none"`, `"balanced"` or a table of weights >= 0."""
    if isinstance(value, str):
        if value not in CLASS_WEIGHTS:
            raise RecipeError(f"loss.class_weight must be none, balanced or a table of weights by class name "
                              f"({{cat = 2.0, dog = 1.0}}). Received: class_weight={value!r}")
        return value
    if not isinstance(value, dict) or not value:
        raise RecipeError(f"loss.class_weight must be none, balanced or a table of weights by class name "
                          f"({{cat = 2.0, dog = 1.0}}). Received: class_weight={value!r}")
    for key, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise RecipeError(f"loss.class_weight.{key} must be a finite number >= 0. Received: {key}={weight!r}")
    return {str(k): float(v) for k, v in value.items()}
