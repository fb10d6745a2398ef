"""Says when a run cannot learn: a training loss that stays at chance (ln C for C classes) over
the run's first epochs, with the likely cause it can check."""

from __future__ import annotations

import math
import sys

import keras
import numpy as np

from kzoo.callbacks.lr_control import learning_rate_at
from kzoo.callbacks.resumable import ResumableCallback

# A head learns from how its input differs between examples. Below this spread (see
# `feature_spread`) the logits are the same for every example and the loss cannot leave ln C.
CONSTANT_FEATURES = 1e-3
# Below this rate a few epochs move no weight measurably (float32 keeps about 7 digits).
LOW_LEARNING_RATE = 1e-6

CAUSES = ("constant_features", "random_frozen_bn", "learning_rate_too_low", "labels_mismatch", "unknown")


def chance_loss(num_classes: int) -> float:
    """The cross-entropy of a uniform prediction over `num_classes` classes: ln C."""
    return math.log(num_classes)


def at_chance(losses, num_classes: int, tolerance: float = 0.02) -> bool:
    """Whether every loss in `losses` is within `tolerance` (relative) of ln C."""
    if num_classes < 2 or not losses:
        return False
    chance = chance_loss(num_classes)
    return all(loss is not None and math.isfinite(loss) and abs(loss - chance) <= tolerance * chance
               for loss in losses)


def random_backbone_frozen_bn(recipe) -> bool:
    """Whether a recipe fine-tunes a randomly initialized backbone with its batch norm frozen:
    a staged recipe with `finetune.weights = "none"`, `train_bn = false`, no pretraining, and a
    backbone built by name (a model file or a run folder brings its trained weights)."""
    ft = getattr(recipe, "finetune", None)
    if ft is None or not ft.stages or ft.train_bn or ft.weights not in ("", "none") or ft.pretrain.dataset:
        return False
    backbone = ft.backbone or ""
    return not (backbone.startswith("hub:") or backbone.endswith(".keras") or "/" in backbone or "\\" in backbone)


def head_input_model(model):
    """A model from `model`'s inputs to the input of its last layer with weights (the head's
    dense layer: the features the head classifies), or `None` where that cannot be cut out."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:  # the probe batch is one array
        return None
    for layer in reversed(model.layers):
        if not layer.weights:
            continue
        if isinstance(layer, keras.Model):
            return None
        try:
            return keras.Model(inputs[0], layer.input)
        except (ValueError, AttributeError, TypeError):
            return None
    return None


def feature_spread(model, x, batch_size: int = 64) -> float | None:
    """How much the head's input varies across the examples `x`: the mean over features of
    the standard deviation across examples, divided by the features' root-mean-square size
    when that is above 1. A relative spread catches features that are large but the same for
    every example; an absolute one catches features that vanished (a randomly initialized deep
    backbone with frozen batch norm passes on values around 1e-12), whose gradients vanish too.
    `None` where the head's input cannot be read.

    Args:
        model: the Keras model being trained.
        x: a batch of the model's inputs (the run's probe batch).
        batch_size: examples per forward pass. Defaults to `64`.
    """
    features = head_input_model(model)
    if features is None or len(x) < 2:
        return None
    parts = [np.asarray(features(x[i:i + batch_size], training=False), np.float64)
             for i in range(0, len(x), batch_size)]
    f = np.concatenate(parts).reshape(len(x), -1)
    if not np.all(np.isfinite(f)):
        return None
    rms = float(np.sqrt(np.mean(f ** 2)))
    return float(f.std(axis=0).mean() / max(rms, 1.0))


def likely_cause(spread: float | None, random_frozen_bn: bool, learning_rate: float | None) -> tuple[str, str]:
    """`(cause, explanation)` for a run at chance: the first of these that holds, in order:
    the head's input is nearly constant; the backbone is random with frozen batch norm; the
    learning rate is too low; the features vary but the loss does not fall (labels that do
    not match the inputs). `cause` is one of `CAUSES`."""
    frozen = ("a randomly initialized backbone with frozen batch norm (finetune.weights = \"none\", "
              "train_bn = false)")
    fix = ("load pretrained weights (--weights imagenet or a weights file), or train the batch norm "
           "(finetune.train_bn = true, --train-bn) in a stage that unfreezes the backbone")
    if spread is not None and spread < CONSTANT_FEATURES:
        why = (f"the features the head reads are nearly constant across the probe batch (spread {spread:.1e} "
               f"< {CONSTANT_FEATURES:g}), so it has nothing to learn from")
        if random_frozen_bn:
            return "constant_features", f"{why}: {frozen} passes almost nothing through; {fix}"
        return "constant_features", f"{why}; check the input scaling, the initializer and any frozen layers"
    if random_frozen_bn:
        return "random_frozen_bn", f"{frozen}; {fix}"
    if learning_rate is not None and learning_rate < LOW_LEARNING_RATE:
        return "learning_rate_too_low", (f"the learning rate {learning_rate:.1e} is below {LOW_LEARNING_RATE:g}, "
                                         "too low to move the weights; raise it (kzoo lr-find suggests one)")
    if spread is not None:
        return "labels_mismatch", (f"the features vary across examples (spread {spread:.1e}) yet the loss does not "
                                   "fall: the labels may not match the inputs (shuffled labels, a wrong label "
                                   "column or mixed-up class folders)")
    return "unknown", "no check explains it; look at the data, the labels and the model's head"


def chance_line(losses, num_classes: int, explanation: str, tolerance: float = 0.02) -> str:
    """The one line that says a run is at chance, and why."""
    shown = ", ".join(f"{loss:.4f}" for loss in losses)
    epochs = "epoch 1" if len(losses) == 1 else f"epochs 1-{len(losses)}"
    return (f"the run is at chance: training loss {shown} over {epochs}, within {tolerance * 100:g}% of ln {num_classes} = "
            f"{chance_loss(num_classes):.4f}. Likely cause: {explanation}.")


class ChanceCheck(ResumableCallback, keras.callbacks.Callback):
    """Warns, once, when the training loss stays at chance over the run's first epochs.

    A classifier that predicts every class with the same probability has the cross-entropy
    ln C (C classes). When every epoch of the first `epochs` (or of the whole run, if shorter)
    ends within `tolerance` of ln C, the callback measures what it can and prints one line
    naming the run at chance and the likely cause, the first of: the head's input nearly
    constant on the probe batch; a random backbone with frozen batch norm; a learning rate
    below 1e-6; the features vary yet nothing is learned (labels that do not match the inputs).

    Each epoch's logs get `loss_over_chance` (the loss / ln C: 1.0 is chance), so
    `history.csv` records it; `kzoo_metrics` (`at_chance`, and for a run at chance
    `at_chance_cause` and `at_chance_diagnosis`) goes into `metrics.json`.

    The check covers the first epochs of the run, not of each `fit`: a staged run fits once
    per stage with one instance, so the state is reset when a `fit` starts at epoch 0 (a new
    run) and kept when it starts later (the next stage, or a resumed run).

    Args:
        probe: `(x, y)`, a fixed batch of training inputs for the feature check, or `None` to
            skip it. Defaults to `None`.
        epochs: the number of first epochs checked. Defaults to `2`.
        tolerance: the distance from ln C, relative, that counts as chance. Defaults to `0.02`.
        run_epochs: the run's epochs over all its `fit` calls, or `None` for the `fit`'s own.
            Defaults to `None`.
        random_frozen_bn: the run fine-tunes a random backbone with frozen batch norm (see
            `random_backbone_frozen_bn`). Defaults to `False`.
        verbose: print the line (on stderr). Defaults to `1`.

    Example:
        >>> check = kzoo.callbacks.chance.ChanceCheck(probe=(x[:256], y[:256]))
        >>> model.fit(x, y, epochs=5, callbacks=[check])
        >>> check.kzoo_metrics  # {"at_chance": False, ...}
    """

    resume_attributes = ("losses", "kzoo_metrics")

    def __init__(self, probe=None, epochs: int = 2, tolerance: float = 0.02, run_epochs: int | None = None,
                 random_frozen_bn: bool = False, verbose: int = 1):
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1. Received: epochs={epochs}")
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be between 0 and 1 (a fraction of ln C). Received: tolerance={tolerance}")
        self.probe = probe
        self.epochs = int(epochs)
        self.tolerance = float(tolerance)
        self.run_epochs = run_epochs
        self.random_frozen_bn = bool(random_frozen_bn)
        self.verbose = verbose
        self._first_epoch = True
        self._reset()

    def _reset(self):
        self.losses = []
        self.kzoo_metrics = {}
        self.diagnosis = ""

    def on_train_begin(self, logs=None):
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch and epoch == 0:
            self._reset()
        self._first_epoch = False

    def _num_classes(self) -> int:
        shape = self.model.outputs[0].shape if getattr(self.model, "outputs", None) else None
        return int(shape[-1]) if shape is not None and shape[-1] is not None else 0

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        classes = self._num_classes()
        if loss is None or classes < 2:
            return
        loss = float(loss)
        logs["loss_over_chance"] = loss / chance_loss(classes)
        self.losses = (self.losses + [None] * epoch)[:epoch] + [loss]
        window = min(self.epochs, self.run_epochs or int((self.params or {}).get("epochs") or self.epochs))
        if epoch == window - 1 and not self.kzoo_metrics and None not in self.losses[:window]:
            self._decide(self.losses[:window], classes)

    def _decide(self, losses, classes):
        if not at_chance(losses, classes, self.tolerance):
            self.kzoo_metrics = {"at_chance": False}
            return
        spread = None
        if self.probe is not None:
            try:
                spread = feature_spread(self.model, np.asarray(self.probe[0]))
            except (ValueError, TypeError, RuntimeError):  # a diagnosis never stops the run it diagnoses
                spread = None
        lr = learning_rate_at(self.model.optimizer) if getattr(self.model, "optimizer", None) else None
        cause, explanation = likely_cause(spread, self.random_frozen_bn, lr)
        self.diagnosis = chance_line(losses, classes, explanation, self.tolerance)
        self.kzoo_metrics = {"at_chance": True, "at_chance_cause": cause, "at_chance_diagnosis": self.diagnosis}
        if spread is not None:
            self.kzoo_metrics["feature_spread"] = spread
        if self.verbose:
            print(f"kzoo: warning: {self.diagnosis}", file=sys.stderr, flush=True)
