"""Training throughput and time to target accuracy: kzoo's pipeline vs hand-written Keras."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from benchmarks.harness import Result, alternate, median


def set_determinism(on: bool):
    from tensorflow.python.framework import config

    (config.enable_op_determinism if on else config.disable_op_determinism)()


def synthetic_arrays(n=2048, shape=(32, 32, 3), classes=10, seed=0):
    """Random images and labels packed like `kzoo.data.load_arrays` output (for speed only)."""
    from kzoo.data.core import ArraySplits, DatasetInfo

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n,) + shape).astype("float32")
    y = rng.integers(0, classes, n)
    info = DatasetInfo("synthetic", shape, classes, [str(i) for i in range(classes)], n, 0, 0, "synthetic")
    return ArraySplits(x, y, x[:0], y[:0], x[:0], y[:0], info)


def kzoo_setup(recipe, arrays):
    """The model, compiled, and the training pipeline as `kzoo run` builds them with its defaults.

    Seeds, model and compile go through `kzoo.train` (`compile_stage` asks
    `kzoo.train.determinism` for XLA or op determinism); returns the model, the dataset and the
    plan, whose `op_determinism` the timing loop re-applies before each fit (it is process-wide).
    """
    import keras

    from kzoo.data.core import make_dataset
    from kzoo.train import build_model, compile_stage, decide, plan, seed_everything
    from kzoo.train.determinism import plan_step

    d = recipe.data
    steps = int(np.ceil(len(arrays.x_train) / d.batch_size))
    seed_everything(recipe.seed, recipe.deterministic)
    decide(recipe)  # the dtype policy, as every run sets it
    model = build_model(recipe, arrays)
    step_plan = plan_step(model, recipe.deterministic, recipe.jit_compile)  # what compile_stage applies
    compile_stage(model, recipe, plan(recipe)[0][0], None, steps)
    keras.mixed_precision.set_global_policy("float32")  # built layers keep theirs; the baseline is float32
    ds = make_dataset(arrays.x_train, arrays.y_train, d.batch_size, True, recipe.seed, d.cache, d.shuffle_buffer)
    return model, ds, step_plan


def stock_keras(model):
    """`model`'s architecture in Keras's own layers: kzoo's fused batch norm becomes
    `keras.layers.BatchNormalization` (same config; fresh weights, which a speed test ignores)."""
    import keras

    from kzoo.zoo.layers import FusedBatchNormalization

    def clone(layer):
        cls = keras.layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        return cls.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def baseline_setup(recipe, arrays, keras_defaults=False):
    """The same architecture in Keras's own layers (`stock_keras`), compiled the plain Keras way,
    fed by from_tensor_slices().batch().

    With `keras_defaults`, also Keras's defaults where a user would leave them: Adam 1e-3, no
    schedule, batch-norm momentum 0.99, no augmentation, batch size 32.
    """
    import keras
    import tensorflow as tf

    from kzoo.zoo import create_model

    kwargs = {k: v for k, v in recipe.model.items() if k != "name"}
    if keras_defaults and "bn_momentum" in kwargs:
        kwargs["bn_momentum"] = 0.99
    from kzoo.data.preprocessing import augmentation_layers

    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(arrays.x_train)
    aug = recipe.data.augment
    layers = [] if keras_defaults else augmentation_layers(
        arrays.info.input_shape, aug.flip, aug.translation, aug.rotation, aug.zoom, aug.crop, seed=recipe.seed)
    model = stock_keras(create_model(recipe.model["name"], arrays.info.input_shape, arrays.info.num_classes,
                                     layers + [norm], seed=recipe.seed, **kwargs))
    if keras_defaults:
        optimizer = keras.optimizers.Adam()
    else:
        from kzoo.callbacks.schedules import build_schedule
        from kzoo.optimizers import build_optimizer

        steps = int(np.ceil(len(arrays.x_train) / recipe.data.batch_size))
        optimizer = build_optimizer(recipe.optimizer, build_schedule(recipe.schedule, recipe.optimizer.lr, steps, recipe.epochs))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batch = 32 if keras_defaults else recipe.data.batch_size
    ds = tf.data.Dataset.from_tensor_slices((arrays.x_train, arrays.y_train)).batch(batch)
    return model, ds


def pipeline_seconds(ds, epochs=1):
    """Time to iterate the input pipeline alone (no training step)."""
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in ds:
            pass
    return (time.perf_counter() - start) / epochs


def throughput(name, recipe, arrays, epochs=2, repeats=3, min_seconds=1.5):
    """Steady-state training samples/s: kzoo's defaults vs plain Keras `model.fit` (warm-up excluded).

    kzoo: the model compiled as `kzoo run` compiles it (`kzoo_setup`). Keras: the same
    architecture, optimizer and batch size, compiled with Keras's defaults (`jit_compile="auto"`,
    which is off on a CPU-only machine, one step per call) and fed by
    `from_tensor_slices().batch()`. The runs alternate; `details` also holds the ratio of this
    process's CPU time per sample, the steadier figure when other jobs share the cores.
    """
    k_model, k_ds, plan = kzoo_setup(recipe, arrays)
    set_determinism(False)
    b_model, b_ds = baseline_setup(recipe, arrays)
    n = len(arrays.x_train)
    cpu = {"kzoo": [], "baseline": []}

    def timed(key, model, ds, deterministic):
        def go():
            set_determinism(deterministic)
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
            cpu[key].append(n * epochs / max(time.process_time() - cpu_start, 1e-9))
            return n * epochs / (time.perf_counter() - start)
        return go

    for model, ds, det in ((k_model, k_ds, plan.op_determinism), (b_model, b_ds, False)):
        set_determinism(det)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing and compilation
    # Each measurement lasts at least `min_seconds`, so fast epochs (mlp-digits: ~40 ms) are not noise.
    set_determinism(False)
    probe_start = time.perf_counter()
    b_model.fit(b_ds, epochs=1, verbose=0, shuffle=False)
    epochs = max(epochs, int(np.ceil(min_seconds / max(time.perf_counter() - probe_start, 1e-3))))
    values = alternate({"kzoo": timed("kzoo", k_model, k_ds, plan.op_determinism),
                        "baseline": timed("baseline", b_model, b_ds, False)}, repeats)
    set_determinism(False)
    k, b = median(values["kzoo"]), median(values["baseline"])
    epoch_k = n / k
    input_k = pipeline_seconds(k_ds)
    stage = "input pipeline" if input_k > 0.5 * epoch_k else "step time"
    cpu_ratio = median(cpu["kzoo"]) / median(cpu["baseline"])
    xla = ("XLA" if k_model.jit_compile else "no XLA") + f", {k_model.dtype_policy.name}"
    return Result(
        f"train throughput {name}", "samples/s (steady), kzoo defaults vs Keras defaults", k, b, "samples/s",
        goal=1.5,
        note=(f"kzoo: {xla}, {plan.mechanism}; CPU-time ratio {cpu_ratio:.2f}; slowest stage: {stage} "
              f"(input {input_k * 1e3:.0f} ms of {epoch_k * 1e3:.0f} ms per epoch)"),
        details={"kzoo_runs": values["kzoo"], "baseline_runs": values["baseline"], "cpu_time_ratio": round(cpu_ratio, 3),
                 "jit_compile": bool(k_model.jit_compile), "dtype_policy": k_model.dtype_policy.name, "mechanism": plan.mechanism, "plan_note": plan.note,
                 "steps_per_execution": int(k_model.steps_per_execution)},
    )


def throughput_job(label, recipe_name, overrides, synthetic, epochs, repeats):
    """`training.throughput` of one recipe on digits, or on `synthetic` random 32x32 images."""
    import kzoo

    recipe = kzoo.recipes.load(recipe_name, overrides or None)
    arrays = synthetic_arrays(synthetic) if synthetic else kzoo.data.load_arrays("digits")
    return throughput(label, recipe, arrays, epochs, repeats)


def time_to_accuracy(recipe, arrays, target=0.98, max_epochs=40):
    """Training seconds until test accuracy reaches `target` (evaluation time excluded)."""
    import keras

    from kzoo.data.core import make_dataset

    test = make_dataset(arrays.x_test, arrays.y_test, 256)

    def run(model, ds, deterministic):
        set_determinism(deterministic)
        spent = 0.0
        for epoch in range(max_epochs):
            start = time.perf_counter()
            model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0, shuffle=False)
            spent += time.perf_counter() - start
            if model.evaluate(test, verbose=0)[1] >= target:
                return spent, epoch + 1
        return float("inf"), max_epochs

    keras.utils.set_random_seed(recipe.seed)
    k_model, k_ds, k_plan = kzoo_setup(recipe, arrays)
    k_secs, k_epochs = run(k_model, k_ds, k_plan.op_determinism)
    keras.utils.set_random_seed(recipe.seed)
    b_secs, b_epochs = run(*baseline_setup(recipe, arrays, keras_defaults=True), False)
    set_determinism(False)
    return Result(
        f"time to {target:.2f} test accuracy, {recipe.name}", "seconds", k_secs, b_secs, "s", goal=1.0,
        higher_is_better=False,
        note=f"kzoo {k_epochs} epochs, Keras defaults {b_epochs} epochs (max {max_epochs})",
    )


def batch_scaling(recipe, arrays, batch_sizes=(32, 64, 128, 256, 512, 1024), epochs=1):
    """kzoo pipeline throughput per batch size: rows of (batch_size, samples/s)."""
    rows = []
    for bs in batch_sizes:
        r = recipe.__class__(**{**recipe.__dict__})
        r.data = type(recipe.data)(**{**recipe.data.__dict__, "batch_size": bs})
        model, ds, plan = kzoo_setup(r, arrays)
        set_determinism(plan.op_determinism)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        start = time.perf_counter()
        model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
        rows.append((bs, len(arrays.x_train) * epochs / (time.perf_counter() - start)))
    set_determinism(False)
    return rows


def depth_scaling(recipe, arrays, models=("resnet20", "resnet32", "resnet56"), epochs=1):
    """kzoo pipeline throughput per registered model name: rows of (name, params, samples/s)."""
    from kzoo.zoo import list_models

    rows = []
    for name in [m for m in models if m in list_models()]:
        r = recipe.__class__(**{**recipe.__dict__, "model": {"name": name}})
        model, ds, plan = kzoo_setup(r, arrays)
        set_determinism(plan.op_determinism)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        start = time.perf_counter()
        model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
        rows.append((name, model.count_params(), len(arrays.x_train) * epochs / (time.perf_counter() - start)))
    set_determinism(False)
    return rows


def monitor_overhead(recipe, arrays, epochs=2, repeats=3):
    """Throughput of `kzoo run`'s training with the three monitors on (update ratio, gradients,
    activations at their default sampling) over throughput with none, alternating in one process.

    With monitors the runner keeps `steps_per_execution` at 1 (they hook every step); without, it
    runs a whole epoch per call. `details` also gives the ratio at equal `steps_per_execution=1`,
    which isolates the monitors' own cost.
    """
    from kzoo.callbacks import RunContext, build_callbacks
    from kzoo.data.core import make_dataset
    from kzoo.train import build_model, compile_stage, plan, seed_everything

    d = recipe.data
    steps = int(np.ceil(len(arrays.x_train) / d.batch_size))
    ds = make_dataset(arrays.x_train, arrays.y_train, d.batch_size, True, recipe.seed)
    seed_everything(recipe.seed, recipe.deterministic)
    context = RunContext(recipe=recipe, steps_per_epoch=steps,
                         probe=(arrays.x_train[:256].astype("float32"), arrays.y_train[:256]))
    setups = {}
    for name, with_monitors, spe in (("on", True, None), ("off", False, None), ("off_spe1", False, 1)):
        callbacks = build_callbacks({"update_ratio": {}, "gradients": {}, "activations": {}}, context) if with_monitors else []
        model = build_model(recipe, arrays)
        r = dataclasses.replace(recipe, steps_per_execution=spe) if spe else recipe
        compile_stage(model, r, plan(r)[0][0], None, steps, callbacks)
        # warm-up past every monitor's first sample (gradients and activations sample every
        # 100 steps), so the tracing of their functions is not timed
        model.fit(ds, epochs=max(1, -(-120 // steps)), verbose=0, shuffle=False, callbacks=callbacks)
        setups[name] = (model, callbacks)

    def timed(model, callbacks):
        def go():
            start = time.perf_counter()
            model.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
            return len(arrays.x_train) * epochs / (time.perf_counter() - start)
        return go

    values = alternate({k: timed(*v) for k, v in setups.items()}, repeats)
    set_determinism(False)
    on, off, off1 = (median(values[k]) for k in ("on", "off", "off_spe1"))
    return Result(
        f"monitor overhead, {recipe.name}", "samples/s, monitors on vs off", on, off, "samples/s", goal=0.95,
        note=(f"at equal steps_per_execution=1 the ratio is {on / off1:.2f}; the rest is the per-step hooks "
              "forcing steps_per_execution=1"),
        details={"on": values["on"], "off": values["off"], "off_spe1": values["off_spe1"]},
    )
