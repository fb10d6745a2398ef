"""Per-group learning rates: an optimizer mechanism Keras lacks.

Each update step runs the optimizer's own update once per group of variables with
`learning_rate * factor`, so the factor scales the update itself (for Adam too, whose update
does not scale with the gradient). `lr_multipliers` (layer name -> factor) is part of the
config, so the rates are saved with a compiled model and come back with `load_model`.
Weight decay is applied at the base rate to every group.

Reference: discriminative fine-tuning (Howard & Ruder 2018, "Universal Language Model
Fine-tuning for Text Classification", https://arxiv.org/abs/1801.06146).
"""

from __future__ import annotations


class GroupLearningRates:
    """Mixin over a Keras optimizer: scales each variable's update by its layer's multiplier.

    Args:
        lr_multipliers: layer name -> factor of the learning rate (>= 0); layers not named
            learn at the base rate. Defaults to `None` (every layer at the base rate).
    """

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        multipliers = dict(lr_multipliers or {})
        for key, value in multipliers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"lr_multipliers values must be numbers >= 0. Received: {key}={value!r}")
        self.lr_multipliers = {str(k): float(v) for k, v in multipliers.items()}

    def multiplier(self, variable) -> float:
        """The factor for `variable`: the multiplier of the innermost layer in its path, or 1."""
        for part in reversed(variable.path.split("/")[:-1]):
            if part in self.lr_multipliers:
                return self.lr_multipliers[part]
        return 1.0

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self.lr_multipliers:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        groups: dict[float, tuple[list, list]] = {}
        for grad, variable in zip(grads, trainable_variables):
            g, v = groups.setdefault(self.multiplier(variable), ([], []))
            g.append(grad)
            v.append(variable)
        for factor, (g, v) in groups.items():
            rate = learning_rate if factor == 1.0 else learning_rate * factor
            super()._backend_update_step(g, v, rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}
