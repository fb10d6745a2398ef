"""Per-layer activation statistics on a probe batch: mean/std, dead ReLUs, saturated tanh/sigmoid."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from kzoo.callbacks.layer_select import activation_kind, activation_layers
from kzoo.callbacks.resumable import ResumableCallback, sampled_between

RELU_KINDS = ("relu", "relu6")
SATURATING = {"tanh": (-0.99, 0.99), "sigmoid": (0.01, 0.99), "hard_sigmoid": (0.01, 0.99)}


class ActivationMonitor(ResumableCallback, keras.callbacks.Callback):
    """Every `every_n_steps` steps, statistics of each activation layer's output on a probe batch.

    Logs at each epoch end (the latest sample): `act_mean/<layer>`, `act_std/<layer>`; for ReLU
    layers `dead_relu/<layer>`, the fraction of units (channels, for convolutions) that output
    zero for every probe example and position; for tanh and sigmoid layers
    `saturated/<layer>`, the fraction of outputs in the flat tails (|tanh| > 0.99, sigmoid
    outside [0.01, 0.99]). `trace` keeps every sample. The probe runs in inference mode.
    A resumed run gets the samples and the step count back (saved with each checkpoint), so it
    samples at the same steps and logs what an uninterrupted run logs.
    With several steps per call into the compiled graph (`steps_per_execution`) the sample is taken
    at the end of the call that ran a sampled step, and recorded at that call's last step: the
    probe is one compiled function, so a monitored run keeps its steps per call.

    Args:
        probe: `(x, y)` or `x`: a fixed batch of training inputs.
        every_n_steps: steps between samples. Defaults to `100`.
        dead_warning: warn once when a layer's dead fraction reaches this. Defaults to `0.5`.

    Reference: Glorot & Bengio 2010 (saturation, https://proceedings.mlr.press/v9/glorot10a.html);
    He et al. 2015 (ReLU networks, https://arxiv.org/abs/1502.01852).
    """

    resume_attributes = ("trace", "_step")

    def __init__(self, probe, every_n_steps: int = 100, dead_warning: float = 0.5):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1. Received: every_n_steps={every_n_steps}")
        if not 0 < dead_warning <= 1:
            raise ValueError(f"dead_warning must be in (0, 1]. Received: dead_warning={dead_warning}")
        x = probe[0] if isinstance(probe, (tuple, list)) else probe
        self.probe = np.asarray(x)
        self.every_n_steps = int(every_n_steps)
        self.dead_warning = float(dead_warning)

    def on_train_begin(self, logs=None):
        self.trace = []  # [{"step", "epoch", "stats": {layer: {"mean", "std", ...}}}]
        self._warned = set()
        self._step = 0
        self._epoch = 0
        layers = activation_layers(self.model)
        self._layers = [(layer.name, activation_kind(layer)) for layer in layers]
        key = (id(self.model), tuple(id(layer) for layer in layers))
        if getattr(self, "_fn_key", None) == key and self._fn is not None:
            return  # a second fit on the same model reuses the traced function
        self._fn, self._fn_key = None, key
        if not layers:
            return
        try:
            probe_model = keras.Model(self.model.inputs, [layer.output for layer in layers])
        except (AttributeError, ValueError) as e:  # a subclassed model has no graph to tap
            warnings.warn(f"ActivationMonitor cannot tap this model's layers ({e}); disabled.", stacklevel=2)
            return
        x = tf.constant(self.probe)
        kinds = [k for _, k in self._layers]

        @tf.function
        def stats():
            outs = probe_model(x, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            result = []
            for a, kind in zip(outs, kinds):
                a = tf.cast(a, "float32")
                flat = tf.reshape(a, (-1, a.shape[-1]))  # every example and position, per unit
                dead = tf.reduce_mean(tf.cast(tf.reduce_all(flat <= 0.0, axis=0), "float32"))
                lo, hi = SATURATING.get(kind, (-np.inf, np.inf))
                sat = tf.reduce_mean(tf.cast((a < lo) | (a > hi), "float32"))
                result.append(tf.stack([tf.reduce_mean(a), tf.math.reduce_std(a), dead, sat]))
            return tf.stack(result)

        self._fn = stats

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch

    def on_train_batch_end(self, batch, logs=None):
        before, self._step = self._step, self._step + batch - getattr(self, "_begin", batch) + 1
        if self._fn is not None and sampled_between(before, self._step, self.every_n_steps):
            self.sample(self._step - 1)

    def sample(self, step=None):
        """Measures now; returns `{layer: {"mean", "std", "dead", "saturated"}}`."""
        values = self._fn().numpy().astype("float64")
        stats = {}
        for (name, kind), (mean, std, dead, sat) in zip(self._layers, values):
            s = {"mean": mean, "std": std}
            if kind in RELU_KINDS:
                s["dead"] = dead
                if dead >= self.dead_warning and name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(f"{dead:.0%} of the units of layer '{name}' are dead (zero for the "
                                  "whole probe batch): lower the learning rate, or use leaky_relu "
                                  "or an initializer matched to ReLU (he_normal).", stacklevel=2)
            if kind in SATURATING:
                s["saturated"] = sat
            stats[name] = s
        self.trace.append({"step": self._step - 1 if step is None else step, "epoch": self._epoch,
                           "stats": stats})
        return stats

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.trace:
            return
        for name, s in self.trace[-1]["stats"].items():
            logs[f"act_mean/{name}"] = s["mean"]
            logs[f"act_std/{name}"] = s["std"]
            if "dead" in s:
                logs[f"dead_relu/{name}"] = s["dead"]
            if "saturated" in s:
                logs[f"saturated/{name}"] = s["saturated"]
