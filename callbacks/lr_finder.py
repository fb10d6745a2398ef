"""The learning-rate range test: sweep the rate exponentially, watch the loss, suggest a rate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from kzoo.plots_dynamics import plot_lr_find


@dataclass
class LRFindResult:
    """What `lr_find` measured.

    Attributes:
        lrs: the rate of each step taken.
        losses: the raw loss of each step.
        smoothed: the bias-corrected exponential moving average of `losses`.
        suggestion: the rate where the smoothed loss falls fastest (per decade of rate).
        stopped_early: the sweep stopped because the loss exceeded `diverge_factor` times its best.
    """

    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    suggestion: float = float("nan")
    stopped_early: bool = False

    def rows(self) -> list[dict]:
        return [{"step": i, "learning_rate": lr, "loss": loss, "smoothed_loss": s}
                for i, (lr, loss, s) in enumerate(zip(self.lrs, self.losses, self.smoothed))]

    def plot(self, path: str, title: str = ""):
        """Writes `lr_find.png`: loss against rate on a log axis, the suggestion marked."""
        plot_lr_find(self, path, title=title)


def suggest_lr(lrs, smoothed, skip_start: int = 3) -> float:
    """The rate of steepest descent of the smoothed loss, searched before its minimum."""
    lrs, smoothed = np.asarray(lrs, np.float64), np.asarray(smoothed, np.float64)
    finite = np.isfinite(smoothed)
    if finite.sum() < 3:
        return float(lrs[0]) if len(lrs) else float("nan")
    end = int(np.nanargmin(np.where(finite, smoothed, np.nan))) + 1
    start = min(skip_start, max(0, end - 3))
    if end - start < 3:
        return float(lrs[max(0, end - 1)] / 10)  # the loss only rose: a decade below its best
    slope = np.gradient(smoothed[start:end], np.log10(lrs[start:end]))
    return float(lrs[start + int(np.argmin(slope))])


def _batches(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        return data.repeat()
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(batch_size).repeat()
    raise ValueError(f"data must be a tf.data.Dataset of (x, y) batches or an (x, y) pair. Received: {type(data).__name__}")


def lr_find(model, data, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            beta: float = 0.98, diverge_factor: float = 4.0, batch_size: int = 64) -> LRFindResult:
    """Runs the range test on a compiled model and puts its weights back afterwards.

    Trains with a copy of the model's optimizer (same class and settings, its own state) while
    the rate grows exponentially from `start_lr` to `end_lr` over `num_steps` steps; stops
    early once the smoothed loss exceeds `diverge_factor` times its best. The model's weights
    (and batch-norm statistics) and its own optimizer are left as they were.

    Args:
        model: a compiled Keras model (its compiled loss is used).
        data: a `tf.data.Dataset` of `(x, y)` batches (repeated as needed) or an `(x, y)` pair.
        start_lr: the first rate. Defaults to `1e-7`.
        end_lr: the last rate. Defaults to `10.0`.
        num_steps: at most this many steps. Defaults to `100`.
        beta: smoothing of the loss's moving average. Defaults to `0.98`.
        diverge_factor: stop when the smoothed loss exceeds this times its best. Defaults to `4.0`.
        batch_size: batch size when `data` is an `(x, y)` pair. Defaults to `64`.

    Returns:
        An `LRFindResult`; `.suggestion` is the rate to try, `.plot(path)` draws the curve.

    Example:
        >>> result = kzoo.callbacks.lr_find(model, (x_train, y_train))
        >>> model.optimizer.learning_rate = result.suggestion

    Reference: Smith 2017, "Cyclical Learning Rates for Training Neural Networks"
    (https://arxiv.org/abs/1506.01186).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find needs 0 < start_lr < end_lr. Received: start_lr={start_lr}, end_lr={end_lr}")
    if num_steps < 5:
        raise ValueError(f"num_steps must be at least 5. Received: num_steps={num_steps}")
    if not 0 <= beta < 1 or not diverge_factor > 1:
        raise ValueError(f"beta must be in [0, 1) and diverge_factor above 1. Received: beta={beta}, "
                         f"diverge_factor={diverge_factor}")
    if getattr(model, "optimizer", None) is None or getattr(model, "_compile_loss", None) is None:
        raise ValueError("lr_find needs a compiled model (optimizer and loss). Received: an uncompiled model")

    config = {**model.optimizer.get_config(), "learning_rate": float(start_lr)}
    optimizer = type(model.optimizer).from_config(config)
    variables = model.trainable_variables
    optimizer.build(variables)
    saved = model.get_weights()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    result = LRFindResult()
    ratio = end_lr / start_lr
    avg, best = 0.0, math.inf
    try:
        for i, (x, y) in enumerate(_batches(data, batch_size).take(num_steps)):
            lr = start_lr * ratio ** (i / (num_steps - 1))
            optimizer.learning_rate = lr
            loss = float(train_step(x, y))
            avg = beta * avg + (1 - beta) * loss
            smooth = avg / (1 - beta ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed.append(smooth)
            if not math.isfinite(smooth) or (i > 0 and smooth > diverge_factor * best):
                result.stopped_early = True
                break
            best = min(best, smooth)
    finally:
        model.set_weights(saved)
    result.suggestion = suggest_lr(result.lrs, result.smoothed)
    return result
