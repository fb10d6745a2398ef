"""kzoo.optimizers: every optimizer a recipe names, built as a `Kzoo<Name>` (`compose.py`): Keras's
update plus per-group learning rates and a momentum a callback may schedule. To add one, register
a builder below; a new class also goes into `compose._MOMENTUM` with its momentum mixin (or None).
"""

from __future__ import annotations

import keras

from kzoo.optimizers.compose import (
    GroupLearningRates,
    composed_class,
    schedule_momentum,
    scheduled_optimizer,
    with_group_learning_rates,
)
from kzoo.optimizers.gains import GAIN_FIELDS, AdaptiveGainSGD, validate_gain_config
from kzoo.registry import Registry

OPTIMIZERS = Registry("optimizer")


@OPTIMIZERS.register
def sgd(cfg, **common):
    """SGD, optionally with momentum and Nesterov momentum (Sutskever et al. 2013)"""
    return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)


@OPTIMIZERS.register
def adagrad(cfg, **common):
    """Adagrad: per-weight rates from accumulated squared gradients (Duchi et al. 2011)"""
    return keras.optimizers.Adagrad(epsilon=cfg.epsilon, **common)


@OPTIMIZERS.register
def rmsprop(cfg, **common):
    """RMSprop: a moving average of squared gradients (Tieleman & Hinton 2012)"""
    return keras.optimizers.RMSprop(rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon, **common)


@OPTIMIZERS.register
def adam(cfg, **common):
    """Adam: momentum plus RMSprop scaling with bias correction (Kingma & Ba 2014)"""
    return keras.optimizers.Adam(beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, **common)


@OPTIMIZERS.register
def adamw(cfg, **common):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2017)"""
    common["weight_decay"] = cfg.weight_decay or 0.004
    return keras.optimizers.AdamW(beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, **common)


@OPTIMIZERS.register
def gains(cfg, **common):
    """SGD with per-weight adaptive gains, delta-bar-delta (Jacobs 1988; kzoo.optimizers.gains)"""
    return AdaptiveGainSGD(momentum=cfg.momentum, **{k: getattr(cfg, k) for k in GAIN_FIELDS}, **common)


OPTIMIZER_DESCRIPTIONS = {name: OPTIMIZERS.meta(name)["description"] for name in OPTIMIZERS.list()}


def build_optimizer(cfg, learning_rate=None, lr_multipliers=None):
    """Builds the optimizer `cfg.name` names, in its kzoo composition.

    Args:
        cfg: a recipe's `OptimizerConfig`.
        learning_rate: a float or a `LearningRateSchedule` replacing `cfg.lr`. Defaults to `cfg.lr`.
        lr_multipliers: layer name -> factor of the learning rate. Defaults to `None` (none).

    Example:
        >>> opt = build_optimizer(kzoo.recipes.load("mlp-digits").optimizer)
    """
    common = {k: getattr(cfg, k) for k in ("clipnorm", "clipvalue", "weight_decay") if getattr(cfg, k)}
    # Keras's own averaging and accumulation: every kzoo composition passes them to the Keras
    # class and keeps them in its config (`with_group_learning_rates` rebuilds from it).
    if getattr(cfg, "ema", 0.0):
        common.update(use_ema=True, ema_momentum=float(cfg.ema))
    if getattr(cfg, "accumulate", 1) > 1:
        common["gradient_accumulation_steps"] = int(cfg.accumulate)
    common["learning_rate"] = cfg.lr if learning_rate is None else learning_rate
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer. Received: name={cfg.name!r}")
    stock = OPTIMIZERS.get(cfg.name)(cfg, **common)
    return with_group_learning_rates(stock, lr_multipliers or {})


__all__ = ["GAIN_FIELDS", "OPTIMIZERS", "OPTIMIZER_DESCRIPTIONS", "AdaptiveGainSGD", "GroupLearningRates",
           "build_optimizer", "composed_class", "schedule_momentum", "scheduled_optimizer", "validate_gain_config",
           "with_group_learning_rates"]
