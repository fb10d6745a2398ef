"""A momentum (or Adam's beta_1) that can change during training.

Keras 3 optimizers keep `momentum` and `beta_1` as Python floats, which a compiled train step
captures as constants when it is traced: assigning a new float afterwards changes nothing. Once
a callback asks for a schedule (`enable_momentum_schedule`), the optimizer holds the value in a
scalar optimizer variable that the compiled step reads, saved with the optimizer's state. An
optimizer nobody schedules keeps Keras's own update bit for bit.

Reference: Sutskever, Martens, Dahl & Hinton 2013, "On the importance of initialization and
momentum in deep learning" (https://proceedings.mlr.press/v28/sutskever13.html).
"""

from __future__ import annotations

import keras
from keras import ops


class ScheduledMomentum:
    """Mixin holding an optimizer's momentum-like hyperparameter in a variable on request.

    `momentum_attr` names the hyperparameter (`momentum` or `beta_1`). The Python attribute is
    kept equal to the last value set, so `get_config` saves the current value.
    """

    momentum_attr = "momentum"
    momentum_variable = None
    momentum_scheduled = False

    def __init__(self, *args, momentum_scheduled=False, **kwargs):
        super().__init__(*args, **kwargs)
        if momentum_scheduled:  # a saved optimizer that had a schedule gets its variable back
            object.__setattr__(self, "momentum_scheduled", True)

    def get_config(self):
        config = super().get_config()
        if self.momentum_scheduled:
            config["momentum_scheduled"] = True
        return config

    def enable_momentum_schedule(self):
        """Makes the momentum settable during training; call before the train step is traced
        (a callback's `set_model`), or reset `model.train_function` after."""
        if not self.momentum_scheduled:
            object.__setattr__(self, "momentum_scheduled", True)
            if self.built:
                self._add_momentum_state(self._trainable_variables)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if self.momentum_scheduled:
            self._add_momentum_state(variables)

    def _missing_buffers(self) -> bool:
        return False

    def _add_buffers(self, variables):
        raise ValueError(f"{type(self).__name__} cannot schedule a momentum it was built without. "
                         f"Received: {self.momentum_attr}=0")

    def _add_momentum_state(self, variables):
        if self._missing_buffers():
            self._add_buffers(variables)
        if self.momentum_variable is None:
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
        if self.momentum_variable is None:
            return super().update_step(gradient, variable, learning_rate)
        # The parent's step reads the attribute with ops.cast / arithmetic: give it the variable
        # while the step is traced, so the graph reads the variable instead of a constant.
        name = self.momentum_attr
        value = getattr(self, name)
        object.__setattr__(self, name, self.momentum_variable)
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            object.__setattr__(self, name, value)


class SGDMomentumStep(ScheduledMomentum):
    """SGD's update with a scheduled momentum: SGD's own step branches on `momentum != 0` in
    Python, which a variable cannot answer inside a graph; the same update, always with the
    velocity buffer (created even when the initial momentum is 0, so a warm-up may start at 0)."""

    def _missing_buffers(self) -> bool:
        return not self.momentums

    def _add_buffers(self, variables):
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum_variable is None:
            return keras.optimizers.SGD.update_step(self, gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        step = ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate))
        self.assign(m, step)
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
        else:
            self.assign_add(variable, m)


class RMSpropMomentum(ScheduledMomentum):
    """RMSprop creates its velocity only with a non-zero momentum; a schedule needs one."""

    def _missing_buffers(self) -> bool:
        return not self.momentum


class GainsMomentum(ScheduledMomentum):
    """`AdaptiveGainSGD`'s velocity, created for a schedule even at momentum 0."""

    def _missing_buffers(self) -> bool:
        return not self.velocities

    def _add_buffers(self, variables):
        self.velocities = self.add_optimizer_variables(variables, "velocity")


class Beta1Momentum(ScheduledMomentum):
    """The Adam family: `beta_1` plays the momentum's part (the bias correction then uses the
    current value, exact for a constant one)."""

    momentum_attr = "beta_1"
