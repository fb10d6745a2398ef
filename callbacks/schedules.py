"""Learning-rate schedules by name. Recipes give times in epochs; kzoo converts them to steps.

Each builder takes the context `(lr, steps_per_epoch, epochs)` plus its own arguments and
returns a float (constant) or a Keras `LearningRateSchedule`, saved with the optimizer.
Every non-constant schedule comes back wrapped in a `ScaledSchedule`, whose multiplier is
what plateau and adaptive callbacks change: in plain Keras an optimizer that holds a schedule
refuses a new learning rate, so `ReduceLROnPlateau` fails on it.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kzoo.errors import RecipeError
from kzoo.registry import Registry

SCHEDULES = Registry("schedule")
CONTEXT_ARGS = ("lr", "steps_per_epoch", "epochs")
_schedules = keras.optimizers.schedules


@keras.saving.register_keras_serializable(package="kzoo")
class ScaledSchedule(_schedules.LearningRateSchedule):
    """A schedule times a multiplier that callbacks may change during training.

    The multiplier is a non-trainable variable read inside the compiled train step, so a
    change takes effect at the next step without retracing; it is saved as a number.

    Args:
        schedule: the wrapped `LearningRateSchedule`, its serialized dict, or a float.
        multiplier: the initial factor. Defaults to `1.0`.

    Example:
        >>> lr = ScaledSchedule(keras.optimizers.schedules.CosineDecay(0.1, 1000))
        >>> lr.multiplier.assign(0.5)  # what ReduceLROnPlateau does in kzoo
    """

    def __init__(self, schedule, multiplier: float = 1.0):
        if isinstance(schedule, dict):
            schedule = _schedules.deserialize(schedule)
        elif isinstance(schedule, (int, float)):
            schedule = Constant(float(schedule))
        if not isinstance(schedule, _schedules.LearningRateSchedule):
            raise ValueError(f"schedule must be a LearningRateSchedule. Received: schedule={schedule!r}")
        if not multiplier > 0:
            raise ValueError(f"multiplier must be positive. Received: multiplier={multiplier}")
        self.schedule = schedule
        self.multiplier = keras.Variable(float(multiplier), dtype="float32", trainable=False,
                                         name="lr_multiplier")

    def unscaled(self, step):
        return ops.cast(self.schedule(step), "float32")

    def __call__(self, step):
        return self.unscaled(step) * ops.convert_to_tensor(self.multiplier)

    def get_config(self):
        return {"schedule": _schedules.serialize(self.schedule),
                "multiplier": float(ops.convert_to_numpy(self.multiplier))}


@keras.saving.register_keras_serializable(package="kzoo")
class Constant(_schedules.LearningRateSchedule):
    """The same rate at every step (so a constant rate can be wrapped and scaled).

    Args:
        value: the learning rate.
    """

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step):
        return ops.full((), self.value, dtype="float32")

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="kzoo")
class OneCycle(_schedules.LearningRateSchedule):
    """The one-cycle policy: the rate rises from `max_lr / div_factor` to `max_lr`, then anneals
    to `max_lr / (div_factor * final_div_factor)`, both halves along a cosine; the momentum
    (SGD's momentum, Adam's beta_1) moves the other way, `max_momentum` -> `min_momentum` -> back.

    `momentum(step)` gives the momentum; `kzoo.callbacks.ScheduleMomentum` applies it.

    Args:
        max_lr: the peak rate.
        total_steps: the length of the cycle in steps.
        pct_start: the fraction of the cycle spent rising. Defaults to `0.25`.
        div_factor: start rate is `max_lr / div_factor`. Defaults to `25.0`.
        final_div_factor: end rate is the start rate over this. Defaults to `1e4`.
        max_momentum, min_momentum: the momentum range. Defaults to `0.95`, `0.85`.

    Reference: Smith 2018, "A disciplined approach to neural network hyper-parameters"
    (https://arxiv.org/abs/1803.09820).
    """

    def __init__(self, max_lr, total_steps, pct_start=0.25, div_factor=25.0, final_div_factor=1e4,
                 max_momentum=0.95, min_momentum=0.85):
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1). Received: pct_start={pct_start}")
        if total_steps < 2:
            raise ValueError(f"total_steps must be at least 2. Received: total_steps={total_steps}")
        if not 0 <= min_momentum <= max_momentum < 1:
            raise ValueError("momentum needs 0 <= min_momentum <= max_momentum < 1. "
                             f"Received: min_momentum={min_momentum}, max_momentum={max_momentum}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.max_momentum = float(max_momentum)
        self.min_momentum = float(min_momentum)

    def _phase(self, step):
        """(fraction through the current half, rising?) as tensors."""
        step = ops.cast(step, "float32")
        up = max(1.0, round(self.pct_start * self.total_steps))
        down = max(1.0, self.total_steps - up)
        rising = step < up
        frac = ops.where(rising, step / up, ops.minimum((step - up) / down, 1.0))
        return frac, rising

    @staticmethod
    def _cos(start, end, frac):
        return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * frac))

    def __call__(self, step):
        frac, rising = self._phase(step)
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        return ops.where(rising, self._cos(start, self.max_lr, frac), self._cos(self.max_lr, end, frac))

    def momentum(self, step):
        frac, rising = self._phase(step)
        hi, lo = self.max_momentum, self.min_momentum
        return ops.where(rising, self._cos(hi, lo, frac), self._cos(lo, hi, frac))

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                "max_momentum": self.max_momentum, "min_momentum": self.min_momentum}


def register_schedule(fn=None, **meta):
    """Registers `fn(lr, steps_per_epoch, epochs, **kwargs) -> float | LearningRateSchedule`."""
    return SCHEDULES.register(fn, **meta)


def schedule_defaults(name: str) -> dict:
    params = SCHEDULES.parameters(name, skip=CONTEXT_ARGS)
    return {k: p.default for k, p in params.items()}


def build_schedule(spec: dict, lr: float, steps_per_epoch: int, epochs: int):
    """Builds the schedule a recipe's [schedule] table names.

    Returns a float for a constant rate, else a `ScaledSchedule` around the named schedule.
    """
    spec = dict(spec)
    name = spec.pop("name", "constant")
    schedule = SCHEDULES.get(name)(lr=lr, steps_per_epoch=steps_per_epoch, epochs=epochs, **spec)
    if isinstance(schedule, _schedules.LearningRateSchedule) and not isinstance(schedule, ScaledSchedule):
        schedule = ScaledSchedule(schedule)
    return schedule


def _steps(epochs: float, steps_per_epoch: int) -> int:
    return max(1, int(round(epochs * steps_per_epoch)))


def _check(ok: bool, key: str, value, what: str):
    if not ok:
        raise RecipeError(f"schedule.{key} must be {what}. Received: {key}={value}")


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


@register_schedule
def inverse_time(lr, steps_per_epoch, epochs, decay_rate: float = 0.5, decay_epochs: float = 1.0,
                 staircase: bool = False):
    """lr / (1 + decay_rate * epoch / decay_epochs): the 1/t decay."""
    _check(decay_rate >= 0, "decay_rate", decay_rate, ">= 0")
    _check(decay_epochs > 0, "decay_epochs", decay_epochs, "positive")
    return _schedules.InverseTimeDecay(lr, _steps(decay_epochs, steps_per_epoch), decay_rate,
                                       staircase=staircase)


@register_schedule
def polynomial(lr, steps_per_epoch, epochs, end_factor: float = 0.0, power: float = 1.0):
    """Polynomial decay from lr to `end_factor * lr` over the run (power 1: linear)."""
    _check(end_factor >= 0, "end_factor", end_factor, ">= 0")
    _check(power > 0, "power", power, "positive")
    return _schedules.PolynomialDecay(lr, _steps(epochs, steps_per_epoch), lr * end_factor, power=power)


@register_schedule
def cosine_restarts(lr, steps_per_epoch, epochs, first_epochs: float = 5.0, t_mul: float = 2.0,
                    m_mul: float = 1.0, alpha: float = 0.0):
    """Cosine decay with warm restarts (SGDR): each period `t_mul` x longer, each peak `m_mul` x lower.

    The first period lasts `first_epochs`.

    Reference: Loshchilov & Hutter 2016, "SGDR" (https://arxiv.org/abs/1608.03983).
    """
    _check(first_epochs > 0, "first_epochs", first_epochs, "positive")
    _check(t_mul >= 1, "t_mul", t_mul, ">= 1")
    _check(0 < m_mul <= 1, "m_mul", m_mul, "in (0, 1]")
    return _schedules.CosineDecayRestarts(lr, _steps(first_epochs, steps_per_epoch), t_mul=t_mul,
                                          m_mul=m_mul, alpha=alpha)


@register_schedule
def warmup_cosine(lr, steps_per_epoch, epochs, warmup_epochs: float = 1.0, alpha: float = 0.0):
    """Linear warm-up from 0 to lr over `warmup_epochs`, then cosine decay (Goyal et al. 2017)."""
    _check(0 < warmup_epochs < epochs, "warmup_epochs", warmup_epochs, "in (0, epochs)")
    return cosine(lr, steps_per_epoch, epochs, warmup_epochs=warmup_epochs, alpha=alpha)


@register_schedule
def one_cycle(lr, steps_per_epoch, epochs, pct_start: float = 0.25, div_factor: float = 25.0,
              final_div_factor: float = 1e4, max_momentum: float = 0.95, min_momentum: float = 0.85):
    """One-cycle (fastai's fit_one_cycle): rate up to lr then down, momentum down then up (Smith 2018)."""
    _check(0 < pct_start < 1, "pct_start", pct_start, "in (0, 1)")
    _check(div_factor >= 1, "div_factor", div_factor, ">= 1")
    _check(final_div_factor >= 1, "final_div_factor", final_div_factor, ">= 1")
    _check(0 <= min_momentum <= max_momentum < 1, "min_momentum", min_momentum,
           "in [0, max_momentum] with max_momentum < 1")
    return OneCycle(lr, max(2, epochs * steps_per_epoch), pct_start, div_factor, final_div_factor,
                    max_momentum, min_momentum)


def list_schedules(pattern="*"):
    return SCHEDULES.list(pattern)
