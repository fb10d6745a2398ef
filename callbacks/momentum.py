"""Momentum warm-up: start with a low momentum (or Adam's beta_1) while gradients are large,
then raise it smoothly, per step or per epoch, and log it like the learning rate.

Keras 3 optimizers keep `momentum` and `beta_1` as Python floats, which a compiled train step
captures as constants when it is traced: assigning a new float afterwards changes nothing.
So the scheduled optimizers below hold the value in an optimizer variable, read by the
compiled step each time; `MomentumScheduler` assigns that variable. It turns a stock `SGD`,
`RMSprop`, `Adam`, `AdamW`, `Adamax` or `Nadam` into its scheduled twin when training starts,
keeping the optimizer's state, so a recipe needs nothing more than the callback.

Reference:
    Sutskever, Martens, Dahl & Hinton 2013, "On the importance of initialization and momentum
    in deep learning" (https://proceedings.mlr.press/v28/sutskever13.html).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kzoo.callbacks.registry import register_callback
from kzoo.errors import RecipeError


class ScheduledMomentum:
    """Mixin holding an optimizer's momentum-like hyperparameter in a variable.

    `momentum_attr` names the hyperparameter (`momentum` or `beta_1`); `momentum_variable` is
    the scalar variable the compiled update step reads. Its Python attribute is kept equal to
    the variable's last assigned value, so `get_config` saves the current value.
    """

    momentum_attr = "momentum"
    momentum_variable = None

    def build(self, variables):
        super().build(variables)
        self._add_momentum_variable()

    def _add_momentum_variable(self):
        if getattr(self, "momentum_variable", None) is None:
            value = float(getattr(self, self.momentum_attr))
            self.momentum_variable = self.add_variable(
                shape=(), initializer=keras.initializers.Constant(value), dtype="float32",
                name=self.momentum_attr)

    def set_momentum(self, value: float):
        """Sets the hyperparameter used from the next update step on."""
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{self.momentum_attr} must be in [0, 1). Received: {self.momentum_attr}={value}")
        setattr(self, self.momentum_attr, value)
        if self.momentum_variable is not None:
            self.momentum_variable.assign(value)

    def get_momentum(self) -> float:
        if self.momentum_variable is None:
            return float(getattr(self, self.momentum_attr))
        return float(ops.convert_to_numpy(self.momentum_variable))

    def update_step(self, gradient, variable, learning_rate):
        # The parent's step reads the attribute with ops.cast / arithmetic: give it the variable
        # while the step is traced, so the graph reads the variable instead of a constant.
        name = self.momentum_attr
        value = getattr(self, name)
        object.__setattr__(self, name, self.momentum_variable)
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            object.__setattr__(self, name, value)


@keras.saving.register_keras_serializable(package="kzoo")
class ScheduledSGD(ScheduledMomentum, keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose momentum lives in a variable (see `MomentumScheduler`).

    The velocity buffers are created even when the initial momentum is 0, so a warm-up may
    start from 0.
    """

    def build(self, variables):
        keras.optimizers.SGD.build(self, variables)
        if not self.momentums:
            self.momentums = self.add_optimizer_variables(variables, "momentum")
        self._add_momentum_variable()

    def update_step(self, gradient, variable, learning_rate):
        # SGD's own step branches on `self.momentum != 0` in Python, which a variable cannot
        # answer inside a graph: the same update, always with the velocity buffer.
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        step = ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate))
        self.assign(m, step)
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(m, momentum),
                                                   ops.multiply(gradient, learning_rate)))
        else:
            self.assign_add(variable, m)


@keras.saving.register_keras_serializable(package="kzoo")
class ScheduledRMSprop(ScheduledMomentum, keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop` whose momentum lives in a variable (set a non-zero initial
    momentum: RMSprop creates its velocity buffers only then)."""


@keras.saving.register_keras_serializable(package="kzoo")
class ScheduledAdam(ScheduledMomentum, keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose beta_1 lives in a variable. The bias correction uses the
    current beta_1 (`1 - beta_1**t`), exact for a constant beta_1."""

    momentum_attr = "beta_1"


@keras.saving.register_keras_serializable(package="kzoo")
class ScheduledAdamW(ScheduledMomentum, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose beta_1 lives in a variable."""

    momentum_attr = "beta_1"


@keras.saving.register_keras_serializable(package="kzoo")
class ScheduledAdamax(ScheduledMomentum, keras.optimizers.Adamax):
    """`keras.optimizers.Adamax` whose beta_1 lives in a variable."""

    momentum_attr = "beta_1"


@keras.saving.register_keras_serializable(package="kzoo")
class ScheduledNadam(ScheduledMomentum, keras.optimizers.Nadam):
    """`keras.optimizers.Nadam` whose beta_1 lives in a variable."""

    momentum_attr = "beta_1"


# Most specific first: AdamW is an Adam subclass.
SCHEDULED = [
    (keras.optimizers.SGD, ScheduledSGD),
    (keras.optimizers.RMSprop, ScheduledRMSprop),
    (keras.optimizers.AdamW, ScheduledAdamW),
    (keras.optimizers.Adam, ScheduledAdam),
    (keras.optimizers.Adamax, ScheduledAdamax),
    (keras.optimizers.Nadam, ScheduledNadam),
]


def scheduled_optimizer(optimizer):
    """Turns a stock Keras optimizer, built or not, into its scheduled twin, in place.

    Its state (iterations, momentum buffers) is kept; a built optimizer gains one scalar
    variable holding the momentum. Returns the optimizer; raises `ValueError` for an optimizer
    without a momentum-like hyperparameter.
    """
    if isinstance(optimizer, ScheduledMomentum):
        return optimizer
    for base, twin in SCHEDULED:
        if type(optimizer) is base:
            if twin is ScheduledRMSprop and optimizer.built and not optimizer.momentum:
                raise ValueError("RMSprop was built with momentum 0 and has no velocity to schedule. "
                                 "Received: momentum=0.0")
            optimizer.__class__ = twin
            if optimizer.built:
                if twin is ScheduledSGD and not optimizer.momentums:
                    optimizer.momentums = optimizer.add_optimizer_variables(
                        optimizer._trainable_variables, "momentum")
                optimizer._add_momentum_variable()
            return optimizer
    raise ValueError("Momentum scheduling needs SGD, RMSprop, Adam, AdamW, Adamax or Nadam. "
                     f"Received: optimizer={type(optimizer).__name__}")


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
        schedule: `fn(epoch) -> value`, where `epoch` counts from 0 and is fractional when
            `per_step` (e.g. 2.5 is half-way through the third epoch).
        steps_per_epoch: steps in one epoch, to turn steps into fractional epochs with
            `per_step`. Defaults to `None` (taken from the fit's `steps` parameter).
        per_step: update before every training step rather than every epoch. Defaults to `True`.

    Example:
        >>> warmup = MomentumScheduler(lambda e: momentum_warmup_value(e / 5, 0.5, 0.9))
        >>> model.fit(x, y, epochs=10, callbacks=[warmup])  # history.history["momentum"]

    Reference:
        Sutskever et al. 2013 (https://proceedings.mlr.press/v28/sutskever13.html).
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
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            return
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        if not isinstance(inner, ScheduledMomentum):
            scheduled_optimizer(inner)
            # A train step traced before the swap would keep reading the old constant.
            model.train_function = None
        self._optimizer = inner

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

    Works with SGD and RMSprop (their momentum) and Adam, AdamW (their beta_1). Give SGD a
    non-zero `optimizer.momentum` or not: the warm-up sets it from the first step.

    Reference: Sutskever et al. 2013 (https://proceedings.mlr.press/v28/sutskever13.html).
    """
    for key, value in (("start", start), ("end", end)):
        if not 0 <= value < 1:
            raise RecipeError(f"callbacks.momentum_warmup.{key} must be in [0, 1). Received: {key}={value}")
    if warmup_epochs < 0:
        raise RecipeError(f"callbacks.momentum_warmup.warmup_epochs must be >= 0. Received: warmup_epochs={warmup_epochs}")
    if shape not in ("linear", "cosine", "horizon"):
        raise RecipeError(f"callbacks.momentum_warmup.shape must be linear, cosine or horizon. Received: shape={shape!r}")

    def schedule(epoch):
        progress = epoch / warmup_epochs if warmup_epochs > 0 else 1.0
        return momentum_warmup_value(progress, start, end, shape)

    return MomentumScheduler(schedule, steps_per_epoch=context.steps_per_epoch, per_step=per_step)
