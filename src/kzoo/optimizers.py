"""Keras optimizers from a recipe's [optimizer] table, with gradient clipping and a schedule."""

from __future__ import annotations

import keras


def build_optimizer(cfg, learning_rate=None):
    """Builds the optimizer `cfg.name` names.

    Args:
        cfg: an `OptimizerConfig` (name, lr, momentum, nesterov, weight_decay, betas, rho,
            epsilon, clipnorm, clipvalue).
        learning_rate: a float or a `LearningRateSchedule` replacing `cfg.lr`. Defaults to `cfg.lr`.
    """
    lr = cfg.lr if learning_rate is None else learning_rate
    common = {"learning_rate": lr}
    if cfg.clipnorm:
        common["clipnorm"] = cfg.clipnorm
    if cfg.clipvalue:
        common["clipvalue"] = cfg.clipvalue
    if cfg.weight_decay and cfg.name != "adamw":
        common["weight_decay"] = cfg.weight_decay
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if cfg.name == "adagrad":
        return keras.optimizers.Adagrad(epsilon=cfg.epsilon, **common)
    if cfg.name == "rmsprop":
        return keras.optimizers.RMSprop(rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon, **common)
    if cfg.name == "adam":
        return keras.optimizers.Adam(beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, **common)
    if cfg.name == "adamw":
        return keras.optimizers.AdamW(weight_decay=cfg.weight_decay or 0.004, beta_1=cfg.beta_1,
                                      beta_2=cfg.beta_2, epsilon=cfg.epsilon, **common)
    if cfg.name == "gains":  # per-weight adaptive gains (issue #10)
        from kzoo.optimizers_gains import AdaptiveGainSGD

        return AdaptiveGainSGD(momentum=cfg.momentum, **{k: getattr(cfg, k) for k in GAIN_FIELDS if hasattr(cfg, k)},
                               **common)
    raise ValueError(f"Unknown optimizer. Received: name={cfg.name!r}")


# [optimizer] keys only the `gains` optimizer reads.
GAIN_FIELDS = ("gain_increase", "gain_decrease", "min_gain", "max_gain")
