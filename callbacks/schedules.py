"""Learning-rate schedules by name. Recipes give times in epochs; kzoo converts them to steps.

Each builder takes the context `(lr, steps_per_epoch, epochs)` plus its own arguments and
returns a float (constant) or a Keras `LearningRateSchedule`, saved with the optimizer.
"""

from __future__ import annotations

import keras

from kzoo.errors import RecipeError
from kzoo.registry import Registry

SCHEDULES = Registry("schedule")
CONTEXT_ARGS = ("lr", "steps_per_epoch", "epochs")


def register_schedule(fn=None, **meta):
    """Registers `fn(lr, steps_per_epoch, epochs, **kwargs) -> float | LearningRateSchedule`."""
    return SCHEDULES.register(fn, **meta)


def schedule_defaults(name: str) -> dict:
    params = SCHEDULES.parameters(name, skip=CONTEXT_ARGS)
    return {k: p.default for k, p in params.items()}


def build_schedule(spec: dict, lr: float, steps_per_epoch: int, epochs: int):
    """Builds the schedule a recipe's [schedule] table names."""
    spec = dict(spec)
    name = spec.pop("name", "constant")
    return SCHEDULES.get(name)(lr=lr, steps_per_epoch=steps_per_epoch, epochs=epochs, **spec)


@register_schedule
def constant(lr, steps_per_epoch, epochs):
    """The same learning rate throughout."""
    return lr


@register_schedule
def cosine(lr, steps_per_epoch, epochs, warmup_epochs: float = 0.0, alpha: float = 0.0):
    """Cosine decay to `alpha * lr` over the run, after an optional linear warm-up.

    Reference: Loshchilov & Hutter 2016, "SGDR" (https://arxiv.org/abs/1608.03983).
    """
    if warmup_epochs < 0:
        raise RecipeError(f"schedule.warmup_epochs must be >= 0. Received: warmup_epochs={warmup_epochs}")
    # A run shortened with --epochs keeps at least one step of decay after the warm-up.
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), max(0, epochs * steps_per_epoch - 1))
    total = max(1, epochs * steps_per_epoch - warmup)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, total, alpha=alpha, warmup_target=lr, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(lr, total, alpha=alpha)


@register_schedule
def piecewise(lr, steps_per_epoch, epochs, boundaries: list = (), factor: float = 0.1):
    """Step decay: multiply the rate by `factor` at each epoch in `boundaries` (the lectures' default)."""
    boundaries = list(boundaries)
    if sorted(boundaries) != boundaries or any(b <= 0 for b in boundaries):
        raise RecipeError(f"schedule.boundaries must be increasing positive epochs. Received: boundaries={boundaries}")
    if not boundaries:
        return lr
    steps = [int(round(b * steps_per_epoch)) for b in boundaries]
    values = [lr * factor**i for i in range(len(steps) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(steps, values)


@register_schedule
def exponential(lr, steps_per_epoch, epochs, decay_rate: float = 0.9, decay_epochs: float = 1.0, staircase: bool = False):
    """lr * decay_rate ** (epoch / decay_epochs)."""
    if not 0 < decay_rate <= 1:
        raise RecipeError(f"schedule.decay_rate must be in (0, 1]. Received: decay_rate={decay_rate}")
    return keras.optimizers.schedules.ExponentialDecay(
        lr, max(1, int(round(decay_epochs * steps_per_epoch))), decay_rate, staircase=staircase)


def list_schedules(pattern="*"):
    return SCHEDULES.list(pattern)
