"""Per-layer gradient norms on a fixed probe batch: vanishing and exploding gradients by layer name."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kzoo.callbacks.layer_select import weight_layers
from kzoo.callbacks.resumable import ResumableCallback, sampled_between


class GradientMonitor(ResumableCallback, keras.callbacks.Callback):
    """Every `every_n_steps` steps, the gradient of the loss on a fixed probe batch, per layer.

    Logs `grad_norm/<layer>` and `grad_ratio/<layer>` (||grad|| / ||W||) at each epoch end (the
    latest sample) and keeps every sample in `trace` for `dynamics.png`. A layer is flagged
    *vanishing* when its gradient norm falls below `vanishing * ` the output layer's, and
    *exploding* when it is non-finite or above `exploding`; each flag warns once per layer and
    stays in `flags`. The probe runs in inference mode (dropout off, batch-norm moving
    statistics), so it neither draws random numbers nor touches the model's state.
    A resumed run gets the samples and the step count back (saved with each checkpoint), so it
    samples at the same steps and logs what an uninterrupted run logs.
    With several steps per call into the compiled graph (`steps_per_execution`) the sample is taken
    at the end of the call that ran a sampled step, and recorded at that call's last step: the
    probe is one compiled function, so a monitored run keeps its steps per call.

    Args:
        probe: `(x, y)`, a fixed batch of training inputs and labels.
        every_n_steps: steps between samples. Defaults to `100`.
        vanishing: relative-to-output threshold for vanishing gradients. Defaults to `1e-3`.
        exploding: absolute gradient-norm threshold for exploding gradients. Defaults to `1e3`.

    Example:
        >>> probe = (x_train[:128], y_train[:128])
        >>> model.fit(x, y, callbacks=[kzoo.callbacks.GradientMonitor(probe)])

    Reference: Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward
    neural networks" (https://proceedings.mlr.press/v9/glorot10a.html).
    """

    resume_attributes = ("trace", "flags", "_step")

    def __init__(self, probe, every_n_steps: int = 100, vanishing: float = 1e-3, exploding: float = 1e3):
        super().__init__()
        if not isinstance(probe, (tuple, list)) or len(probe) != 2:
            raise ValueError(f"probe must be an (x, y) pair. Received: probe={type(probe).__name__}")
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1. Received: every_n_steps={every_n_steps}")
        if not 0 < vanishing < 1 or not exploding > 0:
            raise ValueError("vanishing must be in (0, 1) and exploding positive. "
                             f"Received: vanishing={vanishing}, exploding={exploding}")
        self.probe = (np.asarray(probe[0]), np.asarray(probe[1]))
        self.every_n_steps = int(every_n_steps)
        self.vanishing = float(vanishing)
        self.exploding = float(exploding)

    def on_train_begin(self, logs=None):
        self._layers = weight_layers(self.model)
        self.trace = []  # [{"step", "epoch", "norms": {layer: n}, "ratios": {layer: r}}]
        self.flags = {}  # layer -> "vanishing" | "exploding", the latest flag
        self._warned = set()
        self._step = 0
        self._epoch = 0
        # One traced function per model and set of variables: a second `fit` on the same model
        # (a new stage, a resumed run) reuses it instead of tracing again.
        key = (id(self.model), tuple(id(v) for _, vs in self._layers for v in vs))
        if getattr(self, "_fn_key", None) != key:
            self._fn, self._fn_key = self._make_fn(), key

    def _make_fn(self):
        model = self.model
        groups = [vs for _, vs in self._layers]
        flat = [v for vs in groups for v in vs]
        sizes = [len(vs) for vs in groups]
        x, y = (tf.constant(a) for a in self.probe)

        @tf.function
        def norms():
            with tf.GradientTape() as tape:
                y_pred = model(x, training=False)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
            grads = tape.gradient(loss, [v.value for v in flat])
            out_g, out_w, i = [], [], 0
            for n in sizes:
                g = [tf.zeros(()) if gi is None else tf.reduce_sum(tf.square(tf.cast(gi, "float32")))
                     for gi in grads[i:i + n]]
                w = [tf.reduce_sum(tf.square(tf.cast(v.value, "float32"))) for v in flat[i:i + n]]
                out_g.append(tf.sqrt(tf.add_n(g)))
                out_w.append(tf.sqrt(tf.add_n(w)))
                i += n
            return tf.stack(out_g), tf.stack(out_w)

        return norms

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch

    def on_train_batch_end(self, batch, logs=None):
        before, self._step = self._step, self._step + batch - getattr(self, "_begin", batch) + 1
        if sampled_between(before, self._step, self.every_n_steps):
            self.sample(self._step - 1)

    def sample(self, step=None):
        """Measures now; returns `{layer: gradient norm}`."""
        g, w = (t.numpy().astype("float64") for t in self._fn())
        names = [name for name, _ in self._layers]
        norms = dict(zip(names, g.tolist()))
        ratios = {n: (gi / wi if wi > 0 else float("inf")) for n, gi, wi in zip(names, g, w)}
        self.trace.append({"step": self._step - 1 if step is None else step, "epoch": self._epoch,
                           "norms": norms, "ratios": ratios})
        self._check(norms)
        return norms

    def _check(self, norms):
        if not norms:
            return
        output = list(norms.values())[-1]
        for name, n in norms.items():
            flag = None
            if not math.isfinite(n) or n > self.exploding:
                flag = "exploding"
            elif math.isfinite(output) and output > 0 and n < self.vanishing * output:
                flag = "vanishing"
            if flag is None:
                self.flags.pop(name, None)
                continue
            self.flags[name] = flag
            if (name, flag) not in self._warned:
                self._warned.add((name, flag))
                fix = ("lower the learning rate or add gradient clipping" if flag == "exploding" else
                       "use ReLU-family activations, an initializer matched to them, or normalization")
                warnings.warn(f"Gradients {flag} in layer '{name}' (norm {n:.2e}, output layer "
                              f"{output:.2e}): {fix}.", stacklevel=2)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.trace:
            return
        last = self.trace[-1]
        for name in last["norms"]:
            logs[f"grad_norm/{name}"] = last["norms"][name]
            logs[f"grad_ratio/{name}"] = last["ratios"][name]
