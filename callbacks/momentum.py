"""Momentum warm-up: start with a low momentum (or Adam's beta_1) while gradients are large,
then raise it smoothly, per step or per epoch, and log it like the learning rate. The
optimizer holds the value in a variable the compiled step reads (`kzoo.optimizers`); a stock
Keras optimizer is turned into its kzoo class when training starts, keeping its state.
"""

from __future__ import annotations

import math

import keras

from kzoo.callbacks.registry import register_callback
from kzoo.optimizers import schedule_momentum, scheduled_optimizer  # noqa: F401 (public here)


def momentum_warmup_value(progress: float, start: float, end: float, shape: str = "cosine") -> float:
    """The momentum at `progress` in [0, 1] of the warm-up: `start` at 0, `end` from 1 on.

    `linear` interpolates the momentum; `cosine` follows half a cosine; `horizon` interpolates
    the averaging horizon 1 / (1 - momentum) linearly, so the rise is gentle at first and steep
    near 0.99.
    """
    t = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return start + (end - start) * t
    if shape == "cosine":
        return start + (end - start) * 0.5 * (1.0 - math.cos(math.pi * t))
    if shape == "horizon":
        h0, h1 = 1.0 / (1.0 - start), 1.0 / (1.0 - end)
        return 1.0 - 1.0 / (h0 + (h1 - h0) * t)
    raise ValueError(f"shape must be 'linear', 'cosine' or 'horizon'. Received: shape={shape!r}")


class MomentumScheduler(keras.callbacks.Callback):
    """Sets the optimizer's momentum (SGD, RMSprop) or beta_1 (Adam family) from a schedule,
    each step or each epoch, and writes the value used into epoch logs as `momentum`.

    Args:
        schedule: `fn(epoch) -> value`; `epoch` counts from 0, fractional when `per_step`.
        steps_per_epoch: to turn steps into fractional epochs. Defaults to `None` (the fit's).
        per_step: update before every training step rather than every epoch. Defaults to `True`.

    Example:
        >>> warmup = MomentumScheduler(lambda e: momentum_warmup_value(e / 5, 0.5, 0.9))
        >>> model.fit(x, y, epochs=10, callbacks=[warmup])  # history.history["momentum"]

    Reference:
        Sutskever, Martens, Dahl & Hinton 2013, "On the importance of initialization and
        momentum in deep learning" (https://proceedings.mlr.press/v28/sutskever13.html).
    """

    def __init__(self, schedule, steps_per_epoch: int | None = None, per_step: bool = True):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"schedule must be callable. Received: schedule={schedule!r}")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1. Received: steps_per_epoch={steps_per_epoch}")
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.per_step = per_step
        self._optimizer = None

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "optimizer", None) is not None:
            self._optimizer = schedule_momentum(model)

    def on_train_begin(self, logs=None):
        self._epoch = 0
        self._value = None
        if self._optimizer is None:
            self.set_model(self.model)

    def _set(self, epoch: float):
        self._value = float(self.schedule(epoch))
        self._optimizer.set_momentum(self._value)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if not self.per_step:
            self._set(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            steps = self.steps_per_epoch or (self.params or {}).get("steps") or 1
            self._set(self._epoch + batch / steps)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["momentum"] = self._value if self._value is not None else self._optimizer.get_momentum()


@register_callback
def momentum_warmup(context, start: float = 0.5, end: float = 0.9, warmup_epochs: float = 5.0,
                    shape: str = "cosine", per_step: bool = True):
    """Momentum / beta_1 warm-up from `start` to `end` over `warmup_epochs`, logged per epoch.

    SGD (with or without `optimizer.momentum`), RMSprop, and the Adam family's beta_1.
    """
    for key, value in (("start", start), ("end", end)):  # build_callbacks names the callback
        if not 0 <= value < 1:
            raise ValueError(f"{key} must be in [0, 1). Received: {key}={value}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0. Received: warmup_epochs={warmup_epochs}")
    momentum_warmup_value(0.0, start, end, shape)  # an unknown shape raises here, not at the first step

    def schedule(epoch):
        progress = epoch / warmup_epochs if warmup_epochs > 0 else 1.0
        return momentum_warmup_value(progress, start, end, shape)

    return MomentumScheduler(schedule, steps_per_epoch=context.steps_per_epoch, per_step=per_step)
