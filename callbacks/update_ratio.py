"""The update-to-weight ratio per layer, the lectures' learning-rate health check, with an adaptive mode."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kzoo.callbacks.layer_select import weight_layers
from kzoo.callbacks.lr_control import can_scale_learning_rate, scale_learning_rate
from kzoo.callbacks.resumable import ResumableCallback, sampled_between
from kzoo.callbacks.schedules import ScaledSchedule
from kzoo.optimizers.compose import UpdateRatioWatch, watched_optimizer

ADVICE_HIGH = "lower the learning rate"
ADVICE_LOW = "raise the learning rate"


def update_ratio(before: list, after: list) -> float:
    """||W_after - W_before|| / ||W_before|| over a layer's variables taken together (numpy)."""
    num = sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
              for a, b in zip(after, before))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in before)
    return _ratio(math.sqrt(num), math.sqrt(den))


def _ratio(num, den) -> float:
    num, den = float(num), float(den)
    if not (math.isfinite(num) and math.isfinite(den)):
        return float("nan")
    return num / den if den > 0 else float("inf") if num > 0 else 0.0


class UpdateRatioMonitor(ResumableCallback, keras.callbacks.Callback):
    """Measures ||W_after - W_before|| / ||W_before|| for each weight layer over one optimizer step.

    Every `every_n_steps` steps the optimizer copies the weights before the step and compares them
    after, inside the compiled train step (`kzoo.optimizers.compose.UpdateRatioStatistics`; a stock
    Keras optimizer becomes its kzoo class in place), and the monitor reads the samples at the
    ends of the calls into the graph: training keeps several steps per call
    (`steps_per_execution`), except in the adaptive mode, which changes the rate right after
    each sample and so takes one step per call. Epoch logs get `update_ratio/<layer>` (the
    geometric mean of the epoch's samples) and `update_ratio/median` (the median over layers);
    `trace` keeps every sample for `dynamics.png`. About 1e-3 is healthy: a layer outside
    `band` for `patience` samples in a row gets one warning.

    With `adaptive=True` the monitor steers the median ratio toward `target`, the lectures'
    rule: each sample whose median lies outside `[target / tolerance, target * tolerance]`
    multiplies the learning rate by `target / median`, bounded to `[1 / max_change, max_change]`.
    A schedule's own shape is kept: the ratio is compared as if at the schedule's peak
    rate, and samples where the schedule sits below a tenth of its peak (warm-up start, the end
    of a decay) change nothing. Every change is printed and kept in `lr_changes`.
    A resumed run gets the samples, the changes and the step count back (saved with each checkpoint), so it
    samples at the same steps and logs what an uninterrupted run logs.

    Args:
        every_n_steps: steps between samples. Defaults to `10`.
        adaptive: steer the learning rate toward `target`. Defaults to `False`.
        target: the median ratio the adaptive mode aims at. Defaults to `1e-3`.
        band: the healthy range; outside it a layer is flagged. Defaults to `(1e-4, 1e-2)`.
        patience: samples in a row outside `band` before a warning. Defaults to `3`.
        tolerance: the adaptive mode leaves the rate alone within this factor of
            `target`. Defaults to `1.5`.
        max_change: the largest factor one adaptive change applies. Defaults to `4.0`.
        verbose: print adaptive changes. Defaults to `1`.

    Example:
        >>> model.fit(x, y, callbacks=[kzoo.callbacks.UpdateRatioMonitor(adaptive=True)])

    Reference: Karpathy, CS231n "Neural Networks Part 3: babysitting the learning process"
    (https://cs231n.github.io/neural-networks-3/#ratio).
    """

    resume_attributes = ("trace", "lr_changes", "out_of_range", "lr_multiplier", "_last", "_step")

    def __init__(self, every_n_steps: int = 10, adaptive: bool = False, target: float = 1e-3,
                 band=(1e-4, 1e-2), patience: int = 3, tolerance: float = 1.5, max_change: float = 4.0,
                 verbose: int = 1):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1. Received: every_n_steps={every_n_steps}")
        if not target > 0:
            raise ValueError(f"target must be positive. Received: target={target}")
        band = tuple(float(b) for b in band)
        if len(band) != 2 or not 0 < band[0] < band[1]:
            raise ValueError(f"band must be (low, high) with 0 < low < high. Received: band={band}")
        if tolerance < 1 or max_change <= 1:
            raise ValueError("tolerance must be >= 1 and max_change > 1. "
                             f"Received: tolerance={tolerance}, max_change={max_change}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1. Received: patience={patience}")
        self.every_n_steps = int(every_n_steps)
        self.adaptive = bool(adaptive)
        self.target = float(target)
        self.band = band
        self.patience = int(patience)
        self.tolerance = float(tolerance)
        self.max_change = float(max_change)
        self.verbose = verbose
        # The adaptive mode changes the rate after each sample, before the next step.
        self.needs_every_step = self.adaptive
        self._watch = None

    def get_config(self):
        return {"every_n_steps": self.every_n_steps, "adaptive": self.adaptive, "target": self.target,
                "band": list(self.band), "patience": self.patience, "tolerance": self.tolerance,
                "max_change": self.max_change, "verbose": self.verbose}

    # -- state ------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._layers = weight_layers(self.model)
        self.trace = []  # [{"step", "epoch", "ratios": {layer: r}, "median"}]
        self.lr_changes = []  # [{"step", "epoch", "median", "factor", "before", "after"}]
        self.out_of_range = {}  # layer -> latest ratio, while outside `band`
        self._streak = {name: 0 for name, _ in self._layers}
        self._warned = set()
        self._epoch = 0
        self._epoch_samples = []
        self._step = 0
        self._last = {}
        self.lr_multiplier = 1.0  # the product of the adaptive changes in this fit
        self._watch = None
        self._peak = self._schedule_peak() if self.adaptive else None
        if self._layers:
            self._start_watch()
        if self.adaptive and not can_scale_learning_rate(self.model.optimizer):
            raise TypeError("UpdateRatioMonitor(adaptive=True) needs a float learning rate or a "
                            "kzoo ScaledSchedule. Received: learning_rate="
                            f"{type(self.model.optimizer._learning_rate).__name__}")

    def _schedule_peak(self):
        schedule = getattr(self.model.optimizer, "_learning_rate", None)
        if not isinstance(schedule, ScaledSchedule):
            return None
        total = max(1, int((self.params or {}).get("epochs") or 1) * int((self.params or {}).get("steps") or 1))
        steps = np.unique(np.linspace(0, total, num=min(total + 1, 257)).astype("int64"))
        return max(float(ops.convert_to_numpy(schedule.unscaled(int(s)))) for s in steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_samples = []

    # -- sampling ---------------------------------------------------------------------------
    def _start_watch(self):
        optimizer = watched_optimizer(self.model)
        groups = [vs for _, vs in self._layers]
        # Samples between two reads: one call into the graph runs steps_per_execution steps.
        capacity = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1)) // self.every_n_steps + 2
        watch = optimizer.update_watch
        if watch is None or not watch.fits(groups, self.every_n_steps, capacity):
            strategy = getattr(self.model, "distribute_strategy", None) or tf.distribute.get_strategy()
            with strategy.scope():
                watch = UpdateRatioWatch(groups, self.every_n_steps, capacity)
            optimizer.watch_update_ratios(watch)
        # A train function traced before the watch was set would not measure: trace it again
        # (once per watch; a second fit reuses the traced one).
        if self.model.train_function is None or self.model.train_function is not watch.train_function:
            self.model.make_train_function(force=True)
            watch.train_function = self.model.train_function
        watch.step.assign(self._step)
        watch.count.assign(0)
        watch.active.assign(True)
        self._watch = watch

    def set_resume_state(self, values, weights):
        super().set_resume_state(values, weights)
        if self._watch is not None:
            self._watch.step.assign(self._step)  # a resumed run samples at the same steps

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch

    def on_train_batch_end(self, batch, logs=None):
        before, ran = self._step, batch - getattr(self, "_begin", batch) + 1
        self._step += ran
        # Only a call that ran a sampled step has anything to read.
        if self._watch is not None and sampled_between(before, self._step, self.every_n_steps):
            self._collect()

    def _collect(self):
        steps, values = self._watch.read()
        for step, rows in zip(steps, values):
            self._record(step, {name: _ratio(num, den) for (name, _), (num, den) in zip(self._layers, rows)})

    def _record(self, step, ratios):
        median = float(np.median(list(ratios.values()))) if ratios else float("nan")
        self.trace.append({"step": step, "epoch": self._epoch, "ratios": ratios, "median": median})
        self._epoch_samples.append(ratios)
        self._check_band(ratios, step)
        if self.adaptive:
            self._adapt(median, step)

    def on_train_end(self, logs=None):
        if self._watch is not None:
            self._watch.active.assign(False)  # later fits of this optimizer without the monitor measure nothing

    def _check_band(self, ratios, step):
        low, high = self.band
        for name, r in ratios.items():
            outside = not (low <= r <= high)  # also true for nan
            self._streak[name] = self._streak[name] + 1 if outside else 0
            if outside:
                self.out_of_range[name] = r
            else:
                self.out_of_range.pop(name, None)
            if self._streak[name] >= self.patience and name not in self._warned:
                self._warned.add(name)
                advice = ADVICE_LOW if r < low else ADVICE_HIGH
                warnings.warn(
                    f"Update ratio of layer '{name}' has been outside [{low:g}, {high:g}] for "
                    f"{self.patience} samples in a row (now {r:.2e} at step {step}): {advice}.",
                    stacklevel=2)

    def _adapt(self, median, step):
        opt = self.model.optimizer
        scale = 1.0
        if self._peak:
            schedule = opt._learning_rate
            now = float(ops.convert_to_numpy(schedule.unscaled(step)))
            if now < 0.1 * self._peak:
                return
            scale = now / self._peak
        if math.isfinite(median) and median > 0:
            at_peak = median / scale
            if self.target / self.tolerance <= at_peak <= self.target * self.tolerance:
                return
            factor = min(max(self.target / at_peak, 1 / self.max_change), self.max_change)
        else:  # weights became non-finite, or the step changed nothing measurable
            at_peak = median
            factor = 1 / self.max_change if not math.isfinite(median) else self.max_change
        before, after = scale_learning_rate(opt, factor)
        change = {"step": step, "epoch": self._epoch, "median": median, "factor": factor,
                  "before": before, "after": after}
        self.lr_changes.append(change)
        self.lr_multiplier *= factor
        if self.verbose:
            print(
                f"UpdateRatioMonitor: step {step}: median update ratio {median:.2e} "
                f"(target {self.target:.0e}); learning rate x{factor:.3g}: {before:.3g} -> {after:.3g}")

    # -- epoch logs -------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        if self._watch is not None:  # the graph's count is the truth where a call ran fewer steps
            self._step = int(self._watch.step.numpy())
            self._collect()
        if logs is None:
            return
        for name, _ in self._layers:
            values = [s[name] for s in self._epoch_samples if name in s]
            if values:
                self._last[name] = _geometric_mean(values)
        for name, value in self._last.items():
            logs[f"update_ratio/{name}"] = value
        if self._last:
            logs["update_ratio/median"] = float(np.median(list(self._last.values())))
        if self.adaptive:
            logs["lr_multiplier"] = self.lr_multiplier


def _geometric_mean(values):
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        return float("nan")
    if np.any(values <= 0):
        return float(np.mean(values))
    return float(np.exp(np.mean(np.log(values))))
