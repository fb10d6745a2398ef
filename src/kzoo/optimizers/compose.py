"""One composition for every optimizer kzoo builds: Keras's optimizer (or kzoo's gains SGD)
with per-group learning rates and, on request, a scheduled momentum, registered so a saved
model carries it.

`KzooAdam` is `GroupLearningRates + Beta1Momentum + keras.optimizers.Adam`, and so on. With no
multipliers and no schedule it updates exactly as the Keras class does.
"""

from __future__ import annotations

import keras

from kzoo.optimizers.gains import AdaptiveGainSGD
from kzoo.optimizers.group_lr import GroupLearningRates
from kzoo.optimizers.momentum_variable import (
    Beta1Momentum,
    GainsMomentum,
    RMSpropMomentum,
    ScheduledMomentum,
    SGDMomentumStep,
)

# Most specific first: AdamW is an Adam subclass. Adagrad has no momentum to schedule.
_MOMENTUM = [
    (keras.optimizers.SGD, SGDMomentumStep),
    (keras.optimizers.RMSprop, RMSpropMomentum),
    (keras.optimizers.AdamW, Beta1Momentum),
    (keras.optimizers.Adam, Beta1Momentum),
    (keras.optimizers.Adamax, Beta1Momentum),
    (keras.optimizers.Nadam, Beta1Momentum),
    (AdaptiveGainSGD, GainsMomentum),
    (keras.optimizers.Adagrad, None),
]
_COMPOSED: dict = {}


def _make(base, momentum):
    mixins = (GroupLearningRates,) + ((momentum,) if momentum else ()) + (base,)
    cls = type(f"Kzoo{base.__name__}", mixins, {
        "__module__": __name__,
        "__doc__": f"`{base.__module__.split('.src')[0]}.{base.__name__}` with per-layer learning-rate "
                   "multipliers (`lr_multipliers`)" + (" and a momentum a callback may schedule." if momentum else "."),
    })
    return keras.saving.register_keras_serializable(package="kzoo")(cls)


for _base, _momentum in _MOMENTUM:
    _COMPOSED[_base] = _make(_base, _momentum)
    globals()[_COMPOSED[_base].__name__] = _COMPOSED[_base]


def composed_class(optimizer_or_class):
    """The kzoo class for a Keras optimizer (instance or class); a kzoo class maps to itself."""
    cls = optimizer_or_class if isinstance(optimizer_or_class, type) else type(optimizer_or_class)
    if cls in _COMPOSED.values():
        return cls
    if cls not in _COMPOSED:
        names = ", ".join(b.__name__ for b in _COMPOSED)
        raise ValueError(f"kzoo composes {names}. Received: optimizer={cls.__name__}")
    return _COMPOSED[cls]


def with_group_learning_rates(optimizer, lr_multipliers: dict):
    """A copy of a Keras or kzoo optimizer whose updates are scaled per layer: `lr_multipliers`
    maps layer names to factors of the learning rate.

    Example:
        >>> opt = with_group_learning_rates(keras.optimizers.Adam(1e-3), {"stage0_block0_conv1": 0.1})
    """
    config = optimizer.get_config()
    config.pop("lr_multipliers", None)
    lr = optimizer._learning_rate  # keeps a schedule object rather than its serialized form
    config["learning_rate"] = lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else float(
        keras.ops.convert_to_numpy(lr))
    return composed_class(optimizer)(lr_multipliers=lr_multipliers, **config)


def scheduled_optimizer(optimizer):
    """Turns a stock Keras optimizer, built or not, into its kzoo class in place, with its
    momentum scheduled; its state (iterations, buffers) is kept. Returns the optimizer; raises
    `ValueError` for an optimizer without a momentum-like hyperparameter."""
    if not isinstance(optimizer, ScheduledMomentum):
        cls = composed_class(optimizer)
        if not issubclass(cls, ScheduledMomentum):
            raise ValueError("Momentum scheduling needs SGD, RMSprop, Adam, AdamW, Adamax, Nadam or gains. "
                             f"Received: optimizer={type(optimizer).__name__}")
        optimizer.__class__ = cls
        optimizer.lr_multipliers = {}
    if isinstance(optimizer, RMSpropMomentum) and not optimizer.momentum:
        raise ValueError("RMSprop with momentum 0 has no velocity to schedule. Received: momentum=0.0")
    optimizer.enable_momentum_schedule()
    return optimizer
