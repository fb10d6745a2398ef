"""Reading and changing an optimizer's learning rate and momentum while it trains, schedules included.

Keras lets a callback assign a new rate only when the optimizer holds a plain float; with a
`LearningRateSchedule` the setter raises. kzoo wraps schedules in `ScaledSchedule`, and these
helpers scale its multiplier instead, so plateau and adaptive callbacks work with any schedule.
"""

from __future__ import annotations

import keras
from keras import ops

from kzoo.callbacks.schedules import OneCycle, ScaledSchedule
from kzoo.optimizers import schedule_momentum

_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _inner(optimizer):
    """The optimizer that holds the rate: mixed precision wraps it in a `LossScaleOptimizer`,
    whose own `_learning_rate` is an unused variable."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _schedule(optimizer):
    lr = getattr(_inner(optimizer), "_learning_rate", None)
    return lr if isinstance(lr, _Schedule) else None


def learning_rate_at(optimizer, step: int | None = None) -> float:
    """The rate the optimizer uses at `step` (by default, the last step it took)."""
    optimizer = _inner(optimizer)
    schedule = _schedule(optimizer)
    if schedule is None:
        return float(ops.convert_to_numpy(optimizer.learning_rate))
    if step is None:
        step = max(0, int(ops.convert_to_numpy(optimizer.iterations)) - 1)
    return float(ops.convert_to_numpy(schedule(step)))


def can_scale_learning_rate(optimizer) -> bool:
    schedule = _schedule(optimizer)
    return schedule is None or isinstance(schedule, ScaledSchedule)


def scale_learning_rate(optimizer, factor: float) -> tuple[float, float]:
    """Multiplies the optimizer's rate by `factor` from the next step on.

    Works for a float rate and for a `ScaledSchedule` (its multiplier is scaled, so the
    schedule's shape is kept); returns the rate before and after.

    Raises:
        TypeError: for a bare schedule that is not a `ScaledSchedule`.
    """
    optimizer = _inner(optimizer)
    schedule = _schedule(optimizer)
    step = int(ops.convert_to_numpy(optimizer.iterations))
    before = learning_rate_at(optimizer, step)
    if schedule is None:
        optimizer.learning_rate = before * factor
    elif isinstance(schedule, ScaledSchedule):
        schedule.multiplier.assign(float(ops.convert_to_numpy(schedule.multiplier)) * factor)
    else:
        raise TypeError(
            "The learning rate of an optimizer built with a plain LearningRateSchedule cannot change; "
            "wrap it in kzoo.callbacks.schedules.ScaledSchedule. "
            f"Received: learning_rate={type(schedule).__name__}")
    return before, learning_rate_at(optimizer, step)


def lr_multiplier(optimizer) -> float:
    """The factor plateau/adaptive callbacks have applied so far (1.0 for a float rate)."""
    schedule = _schedule(optimizer)
    if isinstance(schedule, ScaledSchedule):
        return float(ops.convert_to_numpy(schedule.multiplier))
    return 1.0


def set_lr_multiplier(optimizer, value: float):
    """Sets a `ScaledSchedule`'s multiplier (a resumed run's, as saved); a float rate is saved
    with the optimizer's variables, so for it this does nothing."""
    schedule = _schedule(optimizer)
    if isinstance(schedule, ScaledSchedule):
        schedule.multiplier.assign(float(value))


def find_schedule(optimizer, cls):
    """The schedule of type `cls` the optimizer holds, looking inside a `ScaledSchedule`."""
    schedule = _schedule(optimizer)
    if isinstance(schedule, ScaledSchedule):
        schedule = schedule.schedule
    return schedule if isinstance(schedule, cls) else None


class ScheduleMomentum(keras.callbacks.Callback):
    """Applies a `OneCycle` schedule's momentum each step: SGD's and RMSprop's momentum, the
    Adam family's `beta_1` (through kzoo's scheduled-momentum optimizers, `kzoo.optimizers`).
    Adam's bias correction assumes a fixed beta_1; like fastai, we accept the small mismatch.
    """

    # Per-step hooks: the engine keeps steps_per_execution at 1 while this callback runs.
    needs_every_step = True

    def set_model(self, model):
        super().set_model(model)
        opt = getattr(model, "optimizer", None)
        self._variable = None
        if opt is not None and find_schedule(opt, OneCycle) is not None:
            self._variable = schedule_momentum(model)

    def on_train_begin(self, logs=None):
        self._schedule = find_schedule(self.model.optimizer, OneCycle)
        if self._schedule is not None and self._variable is None:
            self.set_model(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        if self._schedule is not None and self._variable is not None:
            step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
            self._variable.set_momentum(self._schedule.momentum(step))

    def on_epoch_end(self, epoch, logs=None):
        if self._variable is not None and logs is not None:
            logs["momentum"] = self._variable.get_momentum()

