"""SGD with a learned gain per weight (delta-bar-delta): the global rate times a local gain that
grows while the weight's gradient keeps its sign and shrinks when the sign flips."""

from __future__ import annotations

import keras
from keras import ops

from kzoo.errors import RecipeError

# [optimizer] keys only the `gains` optimizer reads.
GAIN_FIELDS = ("gain_increase", "gain_decrease", "min_gain", "max_gain")


@keras.saving.register_keras_serializable(package="kzoo")
class AdaptiveGainSGD(keras.optimizers.Optimizer):
    """SGD (with optional momentum) where each weight's step is scaled by its own gain.

    For each weight, with gradient `g` and reference `r` (the previous gradient, or with
    `averaging > 0` Jacobs's exponential average "delta-bar"):

    ```
    gain = gain + gain_increase    if g * r > 0   (the sign held: speed up, additively)
    gain = gain * gain_decrease    if g * r < 0   (the sign flipped: slow down, multiplicatively)
    gain = clip(gain, min_gain, max_gain)
    velocity = momentum * velocity - learning_rate * gain * g
    w = w + velocity
    r = averaging * r + (1 - averaging) * g
    ```

    Args:
        learning_rate: the global rate, a float or a `LearningRateSchedule`. Defaults to `0.01`.
        momentum: velocity decay in [0, 1). Defaults to `0.0`.
        gain_increase: added to a gain while the sign holds. Defaults to `0.05`.
        gain_decrease: factor in (0, 1) applied to a gain when the sign flips. Defaults to `0.95`.
        min_gain: lower clip of the gains. Defaults to `0.01`.
        max_gain: upper clip of the gains. Defaults to `10.0`.
        averaging: weight of the past in the reference gradient (Jacobs's theta); `0` compares
            with the previous gradient (Hinton's rule). Defaults to `0.0`.
        **kwargs: the base optimizer's arguments (`weight_decay`, `clipnorm`, `name`, ...).

    Example:
        >>> model.compile(optimizer=AdaptiveGainSGD(0.01, momentum=0.9), loss="mse")

    Reference:
        Jacobs 1988, "Increased rates of convergence through learning rate adaptation", Neural
        Networks 1(4); Hinton, Neural Networks for Machine Learning, lecture 6d
        (https://www.cs.toronto.edu/~hinton/coursera/lecture6/lec6.pdf).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, gain_increase=0.05, gain_decrease=0.95,
                 min_gain=0.01, max_gain=10.0, averaging=0.0, name="adaptive_gain_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for key, value, ok, rule in (("momentum", momentum, 0.0 <= momentum < 1.0, "in [0, 1)"),
                                     ("gain_increase", gain_increase, gain_increase >= 0, ">= 0"),
                                     ("gain_decrease", gain_decrease, 0.0 < gain_decrease < 1.0, "in (0, 1)"),
                                     ("min_gain", min_gain, 0.0 < min_gain <= 1.0, "in (0, 1]"),
                                     ("max_gain", max_gain, max_gain >= 1.0, ">= 1"),
                                     ("averaging", averaging, 0.0 <= averaging < 1.0, "in [0, 1)")):
            if not ok:
                raise ValueError(f"{key} must be {rule}. Received: {key}={value}")
            setattr(self, key, float(value))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.gains = self.add_optimizer_variables(variables, "gain", initializer="ones")
        self.references = self.add_optimizer_variables(variables, "reference_gradient")
        self.velocities = self.add_optimizer_variables(variables, "velocity") if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(ops.convert_to_tensor(gradient), dtype)  # densifies sparse (embedding) gradients
        gain, reference = self.gains[index], self.references[index]

        agreement = ops.multiply(g, reference)
        new_gain = ops.where(agreement > 0, ops.add(gain, self.gain_increase),
                             ops.where(agreement < 0, ops.multiply(gain, self.gain_decrease), gain))
        new_gain = ops.clip(new_gain, self.min_gain, self.max_gain)
        self.assign(gain, new_gain)
        self.assign(reference, ops.add(ops.multiply(reference, self.averaging),
                                       ops.multiply(g, 1.0 - self.averaging)))
        step = ops.multiply(ops.multiply(g, new_gain), lr)
        if self.velocities:  # built with momentum, or for a momentum schedule
            velocity = self.velocities[index]
            self.assign(velocity, ops.subtract(ops.multiply(velocity, self.momentum), step))
            self.assign_add(variable, velocity)
        else:
            self.assign_sub(variable, step)

    def get_config(self):
        keys = ("momentum",) + GAIN_FIELDS + ("averaging",)
        return {**super().get_config(), **{k: getattr(self, k) for k in keys}}


def validate_gain_config(cfg):
    """Checks a recipe's [optimizer] gain fields before anything is built (a `RecipeError`)."""
    try:
        AdaptiveGainSGD(learning_rate=cfg.lr, momentum=cfg.momentum, **{k: getattr(cfg, k) for k in GAIN_FIELDS})
    except ValueError as e:
        raise RecipeError(f"optimizer.{e}") from None
