"""Test helpers for kzoo's building blocks: a Keras-citizenship conformance check and a
finite-difference gradient check.

`conformance_case(...)` describes one layer (or activation, or initializer wrapped in a layer);
`check_conformance(case, tmp_dir)` runs the in-process checks on it; `check_in_fresh_process(cases,
tmp_dir)` saves one model holding every case and, in a new Python process, loads it, compares
its outputs and trains it under `tf.distribute.MirroredStrategy` over two logical CPU devices.

Example:
    >>> case = conformance_case("maxout", lambda: Maxout(2), input_shape=(6,))
    >>> check_conformance(case, tmp_path)
    >>> gradient_check(Maxout(2), np.random.randn(3, 6)) < 1e-6
    True
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

import kzoo.zoo  # noqa: F401  (registers kzoo's layers: the fresh process loads a model holding them)


@dataclass
class ConformanceCase:
    """One thing to check: `make()` returns a fresh layer; `input_shape` is one example's shape
    (a list of shapes for a layer that takes a list of tensors)."""

    name: str
    make: Callable
    input_shape: tuple | list = (6,)
    gradient: bool = True  # run gradient_check on it (needs a float input)
    training_gradient: bool = False  # also gradient-check its training-mode path
    fit: bool = True  # run the fit and mixed-precision checks (off for wrapped Keras built-ins)
    adapt: Callable | None = None  # adapt(layer, x) before use (PCA whitening)
    extra: dict = field(default_factory=dict)

    @property
    def multi_input(self) -> bool:
        return bool(self.input_shape) and isinstance(self.input_shape[0], (list, tuple))

    def inputs(self, batch: int = 8, seed: int = 0):
        """A fixed random batch for this case: an array, or a list of arrays."""
        rng = np.random.default_rng(seed)
        shapes = self.input_shape if self.multi_input else [self.input_shape]
        xs = [rng.standard_normal((batch, *s)).astype("float32") for s in shapes]
        return xs if self.multi_input else xs[0]


def conformance_case(name, make, input_shape=(6,), **kwargs) -> ConformanceCase:
    """One line per layer in the conformance test: `conformance_case("rrelu", RReLU, (6,))`."""
    return ConformanceCase(name=name, make=make, input_shape=tuple(input_shape) if not (
        input_shape and isinstance(input_shape[0], (list, tuple))) else [tuple(s) for s in input_shape], **kwargs)


def randomize_batchnorm(model, seed: int = 0, mean_std: float = 2.0, variance: tuple = (0.2, 4.0),
                        gamma_std: float = 0.5, beta_std: float = 1.0):
    """Gives every BatchNormalization in `model` (nested ones included) statistics and affine
    parameters far from their initial values, as after training, so that comparing a model with
    its BN-folded copy means something.

    Args:
        model: a built Keras model; changed in place.
        seed: the numpy seed. Defaults to `0`.
        mean_std: standard deviation of the moving means (around 0). Defaults to `2.0`.
        variance: range of the moving variances (uniform). Defaults to `(0.2, 4.0)`.
        gamma_std: standard deviation of the scales (around 1). Defaults to `0.5`.
        beta_std: standard deviation of the offsets (around 0). Defaults to `1.0`.

    Returns:
        `model`.
    """
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, mean_std, n))
            layer.moving_variance.assign(rng.uniform(*variance, n))
            layer.gamma.assign(rng.normal(1, gamma_std, n))
            layer.beta.assign(rng.normal(0, beta_std, n))
    return model


# ---------------------------------------------------------------------------------------------
# Gradient check


def gradient_check(layer, x, training: bool = False, eps: float = 1e-6, atol: float = 1e-8,
                   weights: bool = True, seed: int = 0, return_all: bool = False):
    """Compares a layer's autodiff gradient with central finite differences in float64.

    The layer is copied in float64 (same config, same weights); the scalar checked is
    `sum(layer(x) * r)` for a fixed random `r`. Gradients are taken with respect to every input
    and (with `weights`) every trainable weight; the error of one element is
    `|autodiff - numeric| / max(|autodiff|, |numeric|, atol)`. Random state (seed generators,
    moving statistics) is restored before every forward pass, so stochastic layers are checked
    in training mode too.

    Args:
        layer: a Keras layer (built or not).
        x: one input array, or a list of arrays for a layer called on a list.
        training: the `training` flag of the calls. Defaults to `False`.
        eps: finite-difference step. Defaults to `1e-6`.
        atol: floor of the error's denominator, for gradients that are zero. Defaults to `1e-8`.
        weights: also check the trainable weights. Defaults to `True`.
        seed: seed of the projection `r`. Defaults to `0`.
        return_all: return `{tensor name: worst error}` as well. Defaults to `False`.

    Returns:
        The worst relative error over all checked elements (and the per-tensor dict with
        `return_all`).

    Example:
        >>> gradient_check(RReLU(), np.random.randn(4, 5)) < 1e-6
        True
    """
    multi = isinstance(x, (list, tuple))
    xs = [np.asarray(v, dtype="float64") for v in (x if multi else [x])]
    config = {**layer.get_config(), "dtype": "float64"}
    clone = layer.__class__.from_config(config)
    clone(xs if multi else xs[0], training=training)
    if layer.built and layer.weights:
        clone.set_weights([np.asarray(w, dtype="float64") if np.issubdtype(np.asarray(w).dtype, np.floating)
                           else w for w in layer.get_weights()])
    state = [(v, keras.ops.convert_to_numpy(v.value)) for v in clone.non_trainable_variables]

    def forward(inputs):
        for v, value in state:
            v.assign(value)
        return clone(inputs if multi else inputs[0], training=training)

    out = keras.ops.convert_to_numpy(forward([tf.constant(v) for v in xs]))
    r = np.random.default_rng(seed).standard_normal(out.shape)

    def loss(inputs):
        return float(np.sum(keras.ops.convert_to_numpy(forward([tf.constant(v) for v in inputs])) * r))

    variables = list(clone.trainable_variables) if weights else []
    tensors = [tf.Variable(v) for v in xs]
    with tf.GradientTape() as tape:
        y = forward([t.value() for t in tensors])
        scalar = tf.reduce_sum(tf.cast(y, tf.float64) * r)
    grads = tape.gradient(scalar, tensors + variables)

    errors = {}
    for i, (value, grad) in enumerate(zip(xs, grads[: len(xs)])):
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = [v.copy() for v in xs], [v.copy() for v in xs]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            numeric[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        errors[f"input{i}"] = _worst(_np(grad, value.shape), numeric, atol)
    for var, grad in zip(variables, grads[len(xs):]):
        original = keras.ops.convert_to_numpy(var.value).astype("float64")
        numeric = np.zeros_like(original)
        for idx in np.ndindex(original.shape):
            for sign in (1, -1):
                bumped = original.copy()
                bumped[idx] += sign * eps
                var.assign(bumped)
                numeric[idx] += sign * loss(xs)
            numeric[idx] /= 2 * eps
        var.assign(original)
        errors[var.path] = _worst(_np(grad, original.shape), numeric, atol)
    worst = max(errors.values())
    return (worst, errors) if return_all else worst


def _np(grad, shape):
    if grad is None:  # the output does not depend on it
        return np.zeros(shape)
    return keras.ops.convert_to_numpy(grad).astype("float64")


def _worst(analytic, numeric, atol):
    denominator = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol)
    return float(np.max(np.abs(analytic - numeric) / denominator)) if analytic.size else 0.0


# ---------------------------------------------------------------------------------------------
# In-process conformance


def case_model(case: ConformanceCase, seed: int = 0):
    """A small functional model around one fresh instance of the case's layer: its input(s),
    the layer, then Flatten and a 3-way softmax head, so it trains on a classification loss."""
    shapes = case.input_shape if case.multi_input else [case.input_shape]
    inputs = [keras.Input(shape=s, name=f"{case.name}_in{i}") for i, s in enumerate(shapes)]
    layer = case.make()
    if case.adapt is not None:
        case.adapt(layer, case.inputs(64, seed=seed + 1))
    y = layer(inputs if case.multi_input else inputs[0])
    y = keras.layers.Flatten(name=f"{case.name}_flatten")(y)
    y = keras.layers.Dense(3, activation="softmax", dtype="float32", name=f"{case.name}_head",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(y)
    return keras.Model(inputs if case.multi_input else inputs[0], y, name=f"case_{case.name}"), layer


def check_config_round_trip(case: ConformanceCase):
    """`from_config(get_config())` gives the same config, and `serialize_keras_object` then
    `deserialize_keras_object` gives back the same class (so the class is registered)."""
    layer = case.make()
    layer(case.inputs())
    config = layer.get_config()
    again = layer.__class__.from_config(config)
    assert again.get_config() == config, f"{case.name}: get_config/from_config round trip differs"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer), f"{case.name}: deserialized to {type(restored).__name__}"
    assert restored.get_config() == config, f"{case.name}: serialization round trip differs"


def check_fit(case: ConformanceCase, steps: int = 3, mixed_precision: bool = False):
    """`model.fit` on the case's model: finite losses, and the weights move.

    With `mixed_precision`, under the `mixed_float16` policy: the layer computes in float16
    and training (with Keras's automatic loss scaling) still gives finite losses.
    """
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        model, layer = case_model(case)
        x = case.inputs(8 * steps, seed=1)
        y = np.arange(8 * steps) % 3
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                      run_eagerly=True)
        before = [np.array(w) for w in model.get_weights()]
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        losses = history.history["loss"]
        assert all(np.isfinite(losses)), f"{case.name}: non-finite loss {losses}"
        after = model.get_weights()
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), f"{case.name}: fit changed nothing"
        if mixed_precision:
            assert layer.compute_dtype == "float16", f"{case.name}: computes in {layer.compute_dtype}"
            out = layer(case.inputs())
            assert keras.backend.standardize_dtype(out.dtype) == "float16", f"{case.name}: output dtype {out.dtype}"
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(out).astype("float32")))
    finally:
        keras.config.set_dtype_policy(previous)


def check_save_load(case: ConformanceCase, tmp_dir):
    """A model containing the layer saves to `.keras` and loads back with the outputs of the
    model that was saved (not merely of another loaded copy: a `get_config` that drops an
    argument rebuilds the same wrong layer every time)."""
    model, _ = case_model(case)
    path = os.path.join(str(tmp_dir), f"{case.name}.keras")
    model.save(path)
    x = case.inputs()
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(keras.models.load_model(path)(x, training=False))
    np.testing.assert_array_equal(got, expected, err_msg=f"{case.name}: outputs differ after loading")


def check_conformance(case: ConformanceCase, tmp_dir):
    """Every in-process check on one case: config and serialization round trips, `fit`,
    `fit` under mixed precision, `.keras` save and load, and the gradient check."""
    check_config_round_trip(case)
    if case.fit:
        check_fit(case)
        check_fit(case, mixed_precision=True)
    check_save_load(case, tmp_dir)
    if case.gradient:
        for training in (False, True) if case.training_gradient else (False,):
            layer = case.make()
            x = case.inputs(batch=3, seed=2)
            if case.adapt is not None:
                case.adapt(layer, case.inputs(64, seed=3))
            error = gradient_check(layer, x, training=training)
            assert error < 1e-6, f"{case.name}: gradient check error {error:.2e} (training={training})"


# ---------------------------------------------------------------------------------------------
# Fresh-process load and MirroredStrategy


def joint_model(cases):
    """One model holding every case side by side: a dict of inputs, one summed loss head."""
    inputs, outputs = {}, []
    for case in cases:
        model, _ = case_model(case)
        names = [t.name for t in model.inputs]
        ins = [keras.Input(shape=t.shape[1:], name=n) for t, n in zip(model.inputs, names)]
        inputs.update(dict(zip(names, ins)))
        outputs.append(model(ins if case.multi_input else ins[0]))
    y = keras.layers.Average(name="joint_average")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, y, name="conformance")


def joint_inputs(model, batch: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal((batch, *t.shape[1:])).astype("float32") for t in model.inputs}


def check_in_fresh_process(cases, tmp_dir, mirrored: bool = True, timeout: int = 300):
    """Saves one model holding every case, then in a new Python process (which imports only
    `kzoo`) loads it and checks its outputs equal those of the model that was saved, and, with
    `mirrored`, trains it for one epoch under `tf.distribute.MirroredStrategy` over two logical
    CPU devices (set up before TensorFlow initializes, hence the separate process) and predicts
    with it.

    Returns the child's report (a dict).
    """
    model = joint_model(cases)
    path = os.path.join(str(tmp_dir), "conformance.keras")
    model.save(path)
    x = joint_inputs(model)
    # The outputs of the model that was saved: what the fresh process must reproduce.
    expected = model.predict(x, verbose=0)
    np.savez(os.path.join(str(tmp_dir), "conformance.npz"), expected=expected, **x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "kzoo.testing", str(tmp_dir)] + (["--mirrored"] if mirrored else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"fresh-process check failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def _child(tmp_dir, mirrored):
    """Runs in the fresh process: splits the CPU before TensorFlow initializes its devices (at its
    first operation; importing it does not)."""
    if mirrored:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    data = dict(np.load(os.path.join(tmp_dir, "conformance.npz")))
    expected = data.pop("expected")
    path = os.path.join(tmp_dir, "conformance.keras")
    got = keras.models.load_model(path).predict(data, verbose=0)
    report = {"max_abs_diff": float(np.max(np.abs(got - expected)))}
    if report["max_abs_diff"] != 0.0:
        raise SystemExit(f"outputs differ in a fresh process: max |diff| = {report['max_abs_diff']}")
    if mirrored:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = keras.models.load_model(path)
            model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
        y = np.arange(len(expected)) % 3
        history = model.fit(data, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        preds = model.predict(data, batch_size=4, verbose=0)
        report.update(replicas=strategy.num_replicas_in_sync, loss=history.history["loss"],
                      finite=bool(np.all(np.isfinite(preds))))
        if not report["finite"] or not all(np.isfinite(history.history["loss"])):
            raise SystemExit(f"non-finite values under MirroredStrategy: {report}")
    print(json.dumps(report))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _child(sys.argv[1], "--mirrored" in sys.argv[2:])


def steps_to_converge(optimizer, curvatures=(100.0, 10.0, 1.0, 0.1), tol: float = 1e-4,
                      max_steps: int = 3000) -> int:
    """Steps of `optimizer` until the ill-conditioned quadratic 0.5 * sum(c_i w_i^2), from w = 1,
    falls below `tol` times its start (`max_steps` if it never does).

    Reference: Hinton, Neural Networks for Machine Learning, lecture 6d (per-weight gains on an
    elongated error surface).
    """
    c = tf.constant(curvatures, dtype="float32")
    w = keras.Variable(np.ones(len(curvatures), "float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(c * w.value * w.value)
        optimizer.apply(tape.gradient(loss, [w.value]), [w])
        return loss

    start = float(step())
    for i in range(1, max_steps):
        if float(step()) < tol * start:
            return i + 1
    return max_steps


def run_without_timings(run_dir) -> tuple[list, dict]:
    """A run folder's history.csv rows and metrics.json with every timing field left out: what
    two runs of the same recipe must agree on."""
    def timing(key):
        return "second" in key or "time" in key

    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = [{k: v for k, v in row.items() if not timing(k)} for row in csv.DictReader(f)]
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = {k: v for k, v in json.load(f).items() if not timing(k)}
    return rows, metrics
