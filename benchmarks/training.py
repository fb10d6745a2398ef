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


@dataclasses.dataclass
class KzooSetup:
    """kzoo's side of a throughput pair: the compiled model, the engine's batches and its plan."""

    model: object
    plan: object  # kzoo.train.determinism.StepPlan
    arrays: object
    batch_size: int
    seed: int
    steps: int  # per epoch

    def batches(self, epochs, initial_epoch=0):
        """Epochs `initial_epoch` to `epochs - 1` of the engine's seeded per-epoch batches."""
        from kzoo.data.core import make_epoch_dataset

        a = self.arrays
        return make_epoch_dataset(a.x_train, a.y_train, self.batch_size, self.seed, epochs, initial_epoch)

    def fit(self, epochs, initial_epoch=0):
        """Trains epochs `initial_epoch` to `epochs - 1`, as the engine's `keras_fit` does."""
        set_determinism(self.plan.op_determinism)  # process-wide: re-applied before each fit
        self.model.fit(self.batches(epochs, initial_epoch), initial_epoch=initial_epoch, epochs=epochs,
                       steps_per_epoch=self.steps, verbose=0, shuffle=False)


def framing_for(recipe, arrays):
    """The recipe's [finetune] framing layer (pixel scale, resize, pad), as a run builds it, or None."""
    from kzoo.data.framing import framing_layer

    return framing_layer(recipe.finetune, float(np.max(arrays.x_train[:10000])))


def kzoo_setup(recipe, arrays) -> KzooSetup:
    """The model, compiled, and the training batches as `kzoo run` builds them with its defaults.

    Seeds, dtype policy, model (framing, augmentation and standardization inside it) and compile
    go through `kzoo.train` (the thread pools from `kzoo.cpu_threads`; `compile_stage` asks `kzoo.train.determinism` for XLA or op
    determinism and `resolve_steps_per_execution` for the steps per call); the batches are the
    engine's (`make_epoch_dataset`, fed with `steps_per_epoch`). A staged recipe's model trains
    every layer at its first stage's rate (the cost of its all-layers stage).
    """
    import keras

    from kzoo.cpu_threads import apply_threads
    from kzoo.train import build_model, compile_stage, decide, plan, seed_everything
    from kzoo.train.determinism import plan_step

    apply_threads(recipe)  # as a run's Session does first: TensorFlow's pools, sized to the step
    d = recipe.data
    steps = int(np.ceil(len(arrays.x_train) / d.batch_size))
    seed_everything(recipe.seed, recipe.deterministic)
    decide(recipe)  # the dtype policy, as every run sets it
    model = build_model(recipe, arrays, framing=framing_for(recipe, arrays))
    step_plan = plan_step(model, recipe.deterministic, recipe.jit_compile)  # what compile_stage applies
    compile_stage(model, recipe, plan(recipe)[0][0], None, steps)
    keras.mixed_precision.set_global_policy("float32")  # built layers keep theirs; the baseline is float32
    return KzooSetup(model, step_plan, arrays, d.batch_size, recipe.seed, steps)


def stock_keras(model):
    """`model`'s architecture in Keras's own layers: kzoo's fused batch norm becomes
    `keras.layers.BatchNormalization` (same config); the weights are copied over."""
    import keras

    from kzoo.zoo.layers import FusedBatchNormalization

    def clone(layer):
        cls = keras.layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())  # adapted standardization statistics included
    return copy


@dataclasses.dataclass
class NumpyFeed:
    """What a user hands `model.fit` instead of a pipeline: numpy arrays and a batch size."""

    x: np.ndarray
    y: np.ndarray
    batch_size: int

    def fit(self, model, epochs, **kwargs):
        model.fit(self.x, self.y, batch_size=self.batch_size, epochs=epochs, verbose=0, **kwargs)


def baseline_setup(recipe, arrays, keras_defaults=False):
    """Plain Keras, what a user writes instead of kzoo: the same architecture in Keras's stock
    layers at float32, compiled with Keras's defaults, fed numpy arrays by `model.fit(x, y,
    batch_size=...)`. Returns `(model, NumpyFeed)`.

    The architecture is the recipe's model as kzoo builds it (framing, augmentation and
    standardization layers included), built under the float32 policy and cloned by
    `stock_keras` (kzoo's fused batch norm becomes `keras.layers.BatchNormalization`). The
    optimizer and learning-rate schedule are the recipe's, and so is the batch size; the
    compile is Keras's default (`jit_compile="auto"`, which is off on a CPU-only machine, one
    step per call) and `fit` shuffles the arrays (its default).

    With `keras_defaults`, also Keras's defaults where a user would leave them: Adam 1e-3, no
    schedule, batch-norm momentum 0.99, no augmentation, batch size 32.
    """
    import dataclasses as dc

    import keras

    from kzoo.callbacks.schedules import build_schedule
    from kzoo.optimizers import build_optimizer
    from kzoo.train import build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    r = recipe
    if keras_defaults:
        model_args = {**recipe.model, **({"bn_momentum": 0.99} if "bn_momentum" in recipe.model else {})}
        r = dc.replace(recipe, model=model_args, data=dc.replace(recipe.data, augment=type(recipe.data.augment)()))
    try:
        model = stock_keras(build_model(r, arrays, framing=framing_for(r, arrays)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    batch = 32 if keras_defaults else recipe.data.batch_size
    if keras_defaults:
        optimizer = keras.optimizers.Adam()
    else:
        steps = int(np.ceil(len(arrays.x_train) / batch))
        optimizer = build_optimizer(recipe.optimizer, build_schedule(recipe.schedule, recipe.optimizer.lr, steps, recipe.epochs))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, NumpyFeed(arrays.x_train.astype("float32"), arrays.y_train, batch)


def pipeline_seconds(ds, epochs=1):
    """Time to iterate the input pipeline alone (no training step)."""
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in ds:
            pass
    return (time.perf_counter() - start) / epochs


# Op types grouped for the profile of a step (TensorFlow's names, oneDNN's `_Mkl*` variants included).
OP_GROUPS = (("convolutions", ("Conv2D", "Conv3D", "DepthwiseConv")), ("batch norm", ("BatchNorm",)),
             ("input pipeline", ("Dataset", "Iterator")))


def op_time_shares(fit) -> dict:
    """Share of the ops' own CPU time per group of `OP_GROUPS` (and `other`) while `fit()` runs,
    from TensorFlow's profiler (idle threads left out); `{}` where the profiler is unavailable."""
    import glob
    import shutil
    import tempfile

    import tensorflow as tf

    folder = tempfile.mkdtemp(prefix="kzoo-profile-")
    try:
        tf.profiler.experimental.start(folder)
        try:
            fit()
        finally:
            tf.profiler.experimental.stop()
        # The profiler's own converter (what TensorBoard's profile plugin shows as op stats).
        from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

        data, ok = plugin.xspace_to_tools_data(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True),
                                               "framework_op_stats", {})
        if not ok:
            return {}
        import json

        table = json.loads(data)
        table = table[0] if isinstance(table, list) else table
        cols = [c["id"] for c in table["cols"]]
        times = {}
        for row in table["rows"]:
            r = dict(zip(cols, [c.get("v") if c else None for c in row["c"]]))
            if r["type"] != "IDLE":
                times[r["type"]] = times.get(r["type"], 0.0) + float(r["total_self_time"] or 0.0)
    except (ImportError, AttributeError, KeyError, ValueError, tf.errors.OpError):
        return {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = sum(times.values()) or 1.0
    shares = {name: 0.0 for name, _ in OP_GROUPS}
    shares["other"] = 0.0
    for op, t in times.items():
        group = next((name for name, keys in OP_GROUPS if any(k in op for k in keys)), "other")
        shares[group] += t / total
    return {k: round(v, 3) for k, v in shares.items()}


def xla_status(model, plan) -> str:
    """Whether kzoo's step runs under XLA, and if not, which layers or which choice keep it off."""
    from kzoo.train.determinism import has_convolutions, xla_blockers

    if plan.jit_compile:
        return "XLA on"
    reasons = []
    if plan.device == "cpu" and has_convolutions(model):
        reasons.append("convolutions stay on oneDNN (XLA:CPU's are slower)")
    blockers = xla_blockers(model, plan.device)
    if blockers:
        reasons.append(f"{', '.join(blockers)} cannot be XLA-compiled")
    return "XLA off: " + ("; ".join(reasons) or plan.note or "jit_compile = false")


def bound_of(shares, input_share, xla, policy) -> str:
    """One sentence on what bounds kzoo's speed-up, from the step's profile (`op_time_shares`),
    the input pipeline's share of an epoch, `xla_status` and the compute precision."""
    if not shares:
        return f"profile unavailable; input pipeline {input_share:.0%} of an epoch; {xla}"
    if input_share > 0.5:
        return f"the input pipeline: {input_share:.0%} of an epoch; {xla}"
    conv, bn = shares["convolutions"], shares["batch norm"]
    kernels = f"convolution kernels {conv:.0%}" + (f" and batch norm {bn:.0%}" if bn else "")
    removed = ["per-step overhead"] + (["unfused batch norm"] if bn else []) + ([] if policy.startswith("float32") else ["float32"])
    return (f"the {kernels} of kzoo's op time (oneDNN, {policy}), work plain Keras does too; what kzoo "
            f"removes ({', '.join(removed)}) is in the other {1 - conv - bn:.0%}; input pipeline "
            f"{input_share:.0%} of an epoch; {xla}")


def baseline_fit_fn(recipe, arrays):
    """`fit(epochs)` of plain Keras (`baseline_setup`), op determinism off as a user leaves it."""
    b_model, feed = baseline_setup(recipe, arrays)

    def fit(e):
        set_determinism(False)
        feed.fit(b_model, e)
    return fit


def _timed(fit, n, epochs, cpu):
    """A call of `fit(epochs)` returning samples/s; appends the process's CPU-time samples/s to `cpu`."""
    def go():
        start, cpu_start = time.perf_counter(), time.process_time()
        fit(epochs)
        cpu.append(n * epochs / max(time.process_time() - cpu_start, 1e-9))
        return n * epochs / (time.perf_counter() - start)
    return go


def throughput(name, recipe, arrays, epochs=2, repeats=3, goal=2.0, baseline=None):
    """Steady-state training samples/s: kzoo's defaults vs plain Keras (warm-up excluded).

    kzoo: the model compiled and fed as `kzoo run` does (`kzoo_setup`), in this process, whose
    thread pools it sized to the step (`kzoo.cpu_threads`). Plain Keras: the same architecture in
    stock layers at float32, with the recipe's optimizer and batch size, `model.fit` on numpy
    arrays (`baseline_setup`), in a process of its own with TensorFlow's thread pools
    (`baseline`, a `harness.Peer` of `baseline_peer`). The sides alternate round by round, one
    waiting while the other runs, and the ratio is the median of the rounds' ratios: a shared
    machine's speed drifts between seconds, and a pair measured back to back meets the same one.
    The same baseline also runs here in each round, under kzoo's threads:
    `details["ratio_same_threads"]` is the speed-up without the thread plan. `details` also
    holds the ratio of CPU time per sample, the steadier figure when other jobs share the cores.
    Below `goal`, a profile of kzoo's step says what bounds it (`details["bound"]`): the shares
    of convolution and batch-norm kernels, the input pipeline, and XLA's availability.

    Args:
        baseline: a callable returning `(samples/s, CPU-time samples/s)` of one timed run of plain
            Keras in its own process; None: the baseline under kzoo's threads stands in (a
            single-process measurement).
    """
    from benchmarks.harness import paired_median
    from kzoo.cpu_threads import current_plan

    k = kzoo_setup(recipe, arrays)
    set_determinism(False)
    baseline_fit = baseline_fit_fn(recipe, arrays)
    n = len(arrays.x_train)
    cpu = {"kzoo": [], "same": [], "baseline": []}
    k.fit(1)  # warm-up: tracing and compilation
    baseline_fit(1)
    sides = {"kzoo": _timed(k.fit, n, epochs, cpu["kzoo"]), "same": _timed(baseline_fit, n, epochs, cpu["same"])}
    if baseline is not None:
        def other():
            runs, cpu_runs = baseline()
            cpu["baseline"].append(cpu_runs)
            return runs
        sides["baseline"] = other
    values = alternate(sides, repeats)
    set_determinism(False)
    kz, same = median(values["kzoo"]), median(values["same"])
    b_runs, b_cpu = (values["baseline"], cpu["baseline"]) if baseline else (values["same"], cpu["same"])
    b = median(b_runs)
    ratio = paired_median(values["kzoo"], b_runs)
    epoch_k = n / kz
    input_k = pipeline_seconds(k.batches(1))
    cpu_ratio = paired_median(cpu["kzoo"], b_cpu)
    same_ratio = paired_median(values["kzoo"], values["same"])
    policy = k.model.dtype_policy.name
    xla = xla_status(k.model, k.plan)
    threads = current_plan()
    details = {"kzoo_runs": values["kzoo"], "baseline_runs": b_runs, "baseline_same_threads_runs": values["same"],
               "ratio_same_threads": round(same_ratio, 3), "threads": threads.to_dict(),
               "baseline_threads": "TensorFlow's defaults" if baseline else "kzoo's", "epochs_per_run": epochs,
               "rounds": repeats, "cpu_time_ratio": round(cpu_ratio, 3),
               "jit_compile": bool(k.model.jit_compile), "dtype_policy": policy, "mechanism": k.plan.mechanism,
               "plan_note": k.plan.note, "steps_per_execution": int(k.model.steps_per_execution),
               "batch_size": k.batch_size, "input_share": round(input_k / epoch_k, 3), "xla": xla}
    if ratio < goal:
        details["op_shares"] = shares = op_time_shares(lambda: k.fit(1))
        precision = policy if policy != "float32" else f"float32: mixed_precision = {recipe.mixed_precision!r}"
        details["bound"] = bound_of(shares, input_k / epoch_k, xla, precision)
    return Result(
        f"train throughput {name}", "samples/s (steady), kzoo defaults vs plain Keras", kz, b, "samples/s",
        goal=goal,
        note=(f"kzoo: {policy}, {k.plan.mechanism}, {details['steps_per_execution']} steps per call; {xla}; "
              f"threads {threads.intra_op} per op, {threads.inter_op} ops at a time; {same_ratio:.2f}x plain Keras "
              f"on the same threads; batch {k.batch_size}; CPU-time ratio {cpu_ratio:.2f}; input pipeline "
              f"{input_k * 1e3:.0f} ms of {epoch_k * 1e3:.0f} ms per epoch; median of {repeats} rounds' ratios"),
        details=details,
        paired_ratio=ratio,
    )


def _case_data(recipe_name, overrides, synthetic, dataset):
    import kzoo

    recipe = kzoo.recipes.load(recipe_name, overrides or None)
    arrays = synthetic_arrays(synthetic) if synthetic else kzoo.data.load_arrays(dataset or "digits")
    return recipe, arrays


def run_epochs(recipe, arrays, epochs, min_seconds=1.5):
    """Epochs per timed run: at least `epochs`, and enough for a run of plain Keras to last
    `min_seconds` (fast epochs, mlp-digits' ~40 ms, are otherwise noise)."""
    fit = baseline_fit_fn(recipe, arrays)
    fit(1)  # warm-up
    start = time.perf_counter()
    fit(1)
    return max(epochs, int(np.ceil(min_seconds / max(time.perf_counter() - start, 1e-3))))


def baseline_peer(recipe_name, overrides, synthetic, epochs, dataset=None):
    """Plain Keras's side of a throughput row, set up in a process with TensorFlow's thread
    pools (`harness.Peer`): returns `(measure, epochs per run)`, `measure()` one timed run's
    `(samples/s, CPU-time samples/s)`; the epochs per run from `run_epochs` (the same count then
    times kzoo)."""
    recipe, arrays = _case_data(recipe_name, overrides, synthetic, dataset)
    epochs = run_epochs(recipe, arrays, epochs)
    fit, n, cpu = baseline_fit_fn(recipe, arrays), len(arrays.x_train), []
    fit(1)
    timed = _timed(fit, n, epochs, cpu)

    def measure():
        return timed(), cpu[-1]
    return measure, epochs


def throughput_job(label, recipe_name, overrides, synthetic, epochs, repeats, dataset=None, goal=2.0):
    """`training.throughput` of one recipe on `dataset` (default: digits), or on `synthetic`
    random 32x32 images, against plain Keras in a process of its own with TensorFlow's thread
    pools (`baseline_peer`), started before this process's TensorFlow is; `goal` is the ratio
    the row must reach."""
    from benchmarks.harness import TENSORFLOW_THREADS, Peer

    with Peer(baseline_peer, recipe_name, overrides, synthetic, epochs, dataset, env=TENSORFLOW_THREADS) as peer:
        recipe, arrays = _case_data(recipe_name, overrides, synthetic, dataset)
        return throughput(label, recipe, arrays, peer.info, repeats, goal=goal, baseline=peer)


def seconds_to_accuracy(side, recipe_name="cnn-digits", target=0.98, max_epochs=40):
    """Training seconds until test accuracy on digits reaches `target` (evaluation time
    excluded), and the epochs it took: `side` "kzoo" trains as `kzoo run` does, "keras" with
    Keras's defaults (`baseline_setup(keras_defaults=True)`). Meant for a fresh process each:
    kzoo's with the pools its run sizes to the step, Keras's with TensorFlow's."""
    import keras

    import kzoo
    from kzoo.data.core import make_dataset

    recipe, arrays = kzoo.recipes.load(recipe_name), kzoo.data.load_arrays("digits")
    test = make_dataset(arrays.x_test, arrays.y_test, 256)
    keras.utils.set_random_seed(recipe.seed)
    if side == "kzoo":
        k = kzoo_setup(recipe, arrays)
        fit, model = (lambda e: k.fit(e + 1, e)), k.model
    else:
        set_determinism(False)
        model, feed = baseline_setup(recipe, arrays, keras_defaults=True)
        fit = lambda e: feed.fit(model, e + 1, initial_epoch=e)  # noqa: E731
    spent = 0.0
    for epoch in range(max_epochs):
        start = time.perf_counter()
        fit(epoch)
        spent += time.perf_counter() - start
        if model.evaluate(test, verbose=0)[1] >= target:
            return spent, epoch + 1
    return float("inf"), max_epochs


def time_to_accuracy(recipe_name="cnn-digits", target=0.98, max_epochs=40, fresh_process=None):
    """kzoo's defaults vs Keras's in seconds to `target` test accuracy, each side in a fresh
    process (`fresh_process(fn, *args, env=...)`, `harness.in_fresh_process`): Keras's with
    TensorFlow's own thread pools."""
    from benchmarks.harness import TENSORFLOW_THREADS

    k_secs, k_epochs = fresh_process(seconds_to_accuracy, "kzoo", recipe_name, target, max_epochs)
    b_secs, b_epochs = fresh_process(seconds_to_accuracy, "keras", recipe_name, target, max_epochs,
                                     env=TENSORFLOW_THREADS)
    return Result(
        f"time to {target:.2f} test accuracy, {recipe_name}", "seconds", k_secs, b_secs, "s", goal=1.0,
        higher_is_better=False,
        note=f"kzoo {k_epochs} epochs, Keras defaults {b_epochs} epochs (max {max_epochs}); each in its own process",
    )


def batch_scaling_row(recipe_name, batch_size, epochs=1):
    """`(batch_size, samples/s)` of kzoo's pipeline for `recipe_name` on digits at `batch_size`
    (for a fresh process: the step's size decides the thread pools, `kzoo.cpu_threads`)."""
    import kzoo

    recipe = kzoo.recipes.load(recipe_name, [f"data.batch_size={batch_size}"])
    arrays = kzoo.data.load_arrays("digits")
    k = kzoo_setup(recipe, arrays)
    k.fit(1)
    start = time.perf_counter()
    k.fit(epochs)
    set_determinism(False)
    return batch_size, len(arrays.x_train) * epochs / (time.perf_counter() - start)


def batch_scaling(recipe_name, batch_sizes=(32, 64, 128, 256, 512, 1024), epochs=1, fresh_process=None):
    """kzoo pipeline throughput per batch size, each in a fresh process (`fresh_process(fn,
    *args)`, `harness.in_fresh_process`): rows of (batch_size, samples/s)."""
    return [fresh_process(batch_scaling_row, recipe_name, bs, epochs) for bs in batch_sizes]


def depth_scaling(recipe, arrays, models=("resnet20", "resnet32", "resnet56"), epochs=1):
    """kzoo pipeline throughput per registered model name: rows of (name, params, samples/s)."""
    from kzoo.zoo import list_models

    rows = []
    for name in [m for m in models if m in list_models()]:
        r = recipe.__class__(**{**recipe.__dict__, "model": {"name": name}})
        k = kzoo_setup(r, arrays)
        k.fit(1)
        start = time.perf_counter()
        k.fit(epochs)
        rows.append((name, k.model.count_params(), len(arrays.x_train) * epochs / (time.perf_counter() - start)))
    set_determinism(False)
    return rows



def depth_scaling_job(images=1024):
    """`depth_scaling` of resnet20-cifar10 (without its crop and flip) on `images` random 32x32
    images, for a fresh process."""
    import kzoo

    recipe = kzoo.recipes.load("resnet20-cifar10", ["data.augment.crop=0", "data.augment.flip=none"])
    return depth_scaling(recipe, synthetic_arrays(images))
