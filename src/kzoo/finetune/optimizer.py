"""Per-group learning rates as an optimizer mechanism Keras lacks.

`GroupLR<Optimizer>` (GroupLRSGD, GroupLRAdam, ...) is the Keras optimizer with one extra
argument, `lr_multipliers`: layer name -> factor. Each update step runs the optimizer's own
`update_step` once per group of variables with `learning_rate * factor`, so the factor scales the
update itself (for Adam too, whose update does not scale with the gradient). The classes are
registered Keras objects and `lr_multipliers` is part of their config, so the rates are saved
with a compiled model and come back with `keras.models.load_model` (a resumed run keeps them).

Weight decay (`weight_decay=`) is applied at the base rate to every group.
"""

from __future__ import annotations

import keras


class _GroupLearningRates:
    """Mixin over a Keras optimizer: scales each variable's update by its layer's multiplier."""

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


def _make(base):
    cls = type(f"GroupLR{base.__name__}", (_GroupLearningRates, base), {
        "__module__": __name__,
        "__doc__": f"`keras.optimizers.{base.__name__}` with per-layer learning-rate multipliers "
                   "(`lr_multipliers`: layer name -> factor).",
    })
    return keras.saving.register_keras_serializable(package="kzoo")(cls)


GroupLRSGD = _make(keras.optimizers.SGD)
GroupLRAdagrad = _make(keras.optimizers.Adagrad)
GroupLRRMSprop = _make(keras.optimizers.RMSprop)
GroupLRAdam = _make(keras.optimizers.Adam)
GroupLRAdamW = _make(keras.optimizers.AdamW)
_CLASSES = {c.__mro__[2]: c for c in (GroupLRSGD, GroupLRAdagrad, GroupLRRMSprop, GroupLRAdam, GroupLRAdamW)}


def with_group_learning_rates(optimizer, lr_multipliers: dict):
    """A copy of a Keras optimizer (SGD, Adagrad, RMSprop, Adam, AdamW) whose updates are scaled
    per layer: `lr_multipliers` maps layer names to factors of the learning rate.

    Example:
        >>> opt = with_group_learning_rates(keras.optimizers.Adam(1e-3), {"stage0_block0_conv1": 0.1})
    """
    cls = _CLASSES.get(type(optimizer)) or (type(optimizer) if isinstance(optimizer, _GroupLearningRates) else None)
    if cls is None:
        raise ValueError(f"No per-group version of this optimizer. Received: optimizer={type(optimizer).__name__}")
    config = optimizer.get_config()
    config.pop("lr_multipliers", None)
    lr = optimizer._learning_rate  # keeps a schedule object rather than its serialized form
    config["learning_rate"] = lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else float(
        keras.ops.convert_to_numpy(lr))
    return cls(lr_multipliers=lr_multipliers, **config)
