"""Stops a diverging run, restores its best weights and says which layers went wrong and what to try."""

from __future__ import annotations

import math

import keras
import numpy as np

from kzoo.callbacks.layer_select import weight_layers
from kzoo.callbacks.lr_control import learning_rate_at
from kzoo.callbacks.resumable import ResumableCallback
from kzoo.callbacks.update_ratio import update_ratio


class DivergenceGuard(ResumableCallback, keras.callbacks.Callback):
    """Stops training when the loss becomes non-finite or exceeds `factor` times its best.

    The loss checked after each step is Keras's running mean of the epoch so far; after
    `min_steps` steps of an epoch it is compared with `factor` times the best loss seen (the best
    epoch, or the best running mean so far), a non-finite loss stops at once. On stopping it
    restores the weights of the best epoch (the starting weights if none finished), prints
    one paragraph naming the epoch, the step and the layers that were out of range, with the
    advice that follows, and sets `kzoo_metrics = {"stopped": "diverged", ...}`, which the recipe
    runner merges into `metrics.json`.

    A layer is out of range when its weights became non-finite, when it moved by more than its
    own norm since the best weights (||W - W_best|| / ||W_best|| > 1), or when a monitor passed
    in `monitors` (`UpdateRatioMonitor`, `GradientMonitor`) flagged it.

    The best loss, its epoch and weights, and a stop with its diagnosis are saved with each
    checkpoint, so a resumed run compares with the same best and restores the same weights.

    Args:
        factor: the loss multiple of its best that counts as divergence. Defaults to `10.0`.
        min_steps: steps into an epoch before the running mean is compared. Defaults to `3`.
        restore_best_weights: put the best weights back on stopping. Defaults to `True`.
        monitors: monitors whose flags go into the diagnosis. Defaults to none.
        verbose: print the diagnosis. Defaults to `1`.

    Example:
        >>> guard = kzoo.callbacks.DivergenceGuard()
        >>> model.fit(x, y, epochs=30, callbacks=[guard])
        >>> guard.stopped  # None, or {"epoch": 2, "step": 17, "loss": nan}
    """

    # Per-step hooks: the runner keeps steps_per_execution at 1 while this callback runs.
    needs_every_step = True
    resume_attributes = ("best", "best_epoch", "stopped", "diagnosis", "kzoo_metrics", "_step")
    resume_weights = ("best_weights",)

    def __init__(self, factor: float = 10.0, min_steps: int = 3, restore_best_weights: bool = True,
                 monitors=None, verbose: int = 1):
        super().__init__()
        if not factor > 1:
            raise ValueError(f"factor must be above 1. Received: factor={factor}")
        if min_steps < 0:
            raise ValueError(f"min_steps must be >= 0. Received: min_steps={min_steps}")
        self.factor = float(factor)
        self.min_steps = int(min_steps)
        self.restore_best_weights = bool(restore_best_weights)
        self.monitors = monitors if monitors is not None else []
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        self.stopped = None
        self.diagnosis = ""
        self.kzoo_metrics = {}
        self.best = math.inf
        self.best_epoch = None
        self.best_weights = self.model.get_weights()
        self._step = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._epoch_step += 1
        loss = (logs or {}).get("loss")
        if loss is None or self.stopped is not None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self._stop(loss)
        elif self._epoch_step > self.min_steps:
            if loss > self.factor * self.best:
                self._stop(loss)
            elif self.best_epoch is None:
                self.best = min(self.best, loss)  # no epoch finished yet: the best running mean

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped is not None:
            return
        loss = (logs or {}).get("loss")
        if loss is not None and math.isfinite(loss) and (self.best_epoch is None or loss < self.best):
            self.best, self.best_epoch = float(loss), epoch
            self.best_weights = self.model.get_weights()

    def _stop(self, loss):
        self.model.stop_training = True
        self.stopped = {"epoch": self._epoch + 1, "step": self._epoch_step, "global_step": self._step,
                        "loss": loss}
        layers = self._out_of_range()
        self.diagnosis = self._paragraph(loss, layers)
        if self.restore_best_weights:
            self.model.set_weights(self.best_weights)
        self.kzoo_metrics = {
            "stopped": "diverged",
            "diverged_at": {"epoch": self._epoch + 1, "step": self._epoch_step},
            "diverged_layers": sorted(layers),
            "diagnosis": self.diagnosis,
        }

    def _out_of_range(self) -> dict:
        """layer -> reason, for the layers that went wrong."""
        reasons = {}
        current = self.model.get_weights()
        index = {id(v): i for i, v in enumerate(self.model.weights)}
        for name, variables in weight_layers(self.model):
            ids = [index.get(id(v)) for v in variables]
            if any(i is None for i in ids):
                continue
            now = [current[i] for i in ids]
            best = [self.best_weights[i] for i in ids]
            if not all(np.all(np.isfinite(w)) for w in now):
                reasons[name] = "non-finite weights"
                continue
            moved = update_ratio(best, now)
            if moved > 1.0:
                reasons[name] = f"moved {moved:.1f}x its norm since the best weights"
        for monitor in self.monitors:
            for name, r in getattr(monitor, "out_of_range", {}).items():
                reasons.setdefault(name, f"update ratio {r:.1e}")
            for name, flag in getattr(monitor, "flags", {}).items():
                reasons.setdefault(name, f"{flag} gradients")
        return reasons

    def _paragraph(self, loss, layers: dict) -> str:
        lr = learning_rate_at(self.model.optimizer)
        opt = self.model.optimizer
        where = (f"Training diverged in epoch {self._epoch + 1} at step {self._epoch_step} "
                 f"(loss {loss:.4g}; best {self.best:.4g}).")
        if layers:
            named = "; ".join(f"{n}: {why}" for n, why in list(layers.items())[:8])
            more = f" and {len(layers) - 8} more" if len(layers) > 8 else ""
            where += f" Out of range: {named}{more}."
        else:
            where += " No single layer stood out."
        restored = (f" Restored the weights from epoch {self.best_epoch + 1}." if self.best_epoch is not None
                    else " Restored the starting weights.") if self.restore_best_weights else ""
        advice = [f"lower the learning rate (it was {lr:.3g}; try 3-10x lower, or `kzoo lr-find`)"]
        if not (getattr(opt, "clipnorm", None) or getattr(opt, "global_clipnorm", None)
                or getattr(opt, "clipvalue", None)):
            advice.append("add gradient clipping (optimizer.clipnorm = 1.0)")
        advice.append("use an initializer scaled to the activation (he_normal for ReLU, glorot_uniform "
                      "for tanh) or add normalization")
        return where + restored + " Try: " + "; ".join(advice) + "."

    def on_train_end(self, logs=None):
        if self.stopped is not None and self.verbose:
            print("\n" + self.diagnosis)
