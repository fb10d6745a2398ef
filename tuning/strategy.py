"""Distribution strategies, mixed precision and batch scaling from a recipe's top-level fields.

`strategy`:
- `default`: TensorFlow's default strategy (one device; what `kzoo run` always did).
- `auto`: `TPUStrategy` when a TPU resolves, `MirroredStrategy` with more than one GPU,
  the default strategy otherwise.
- `mirrored`: `MirroredStrategy` over every GPU, or over the logical CPUs when there are no
  GPUs and the CPU was split (`tf.config.set_logical_device_configuration`).
- `tpu`: `TPUStrategy` (fails with a `RecipeError` when no TPU resolves).
- `multiworker`: `MultiWorkerMirroredStrategy`; the cluster comes from `TF_CONFIG`.

`mixed_precision`: `off`, `auto` (`mixed_float16` on GPU, `mixed_bfloat16` on TPU, off on
CPU), `mixed_float16` or `mixed_bfloat16`.
"""

from __future__ import annotations

from kzoo.errors import RecipeError, closest

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multiworker")
PRECISIONS = ("off", "auto", "mixed_float16", "mixed_bfloat16")


def validate_strategy_fields(recipe):
    """Checks `strategy` and `mixed_precision` name known values (called by `build_recipe`)."""
    if recipe.strategy not in STRATEGIES:
        raise RecipeError(f"Unknown strategy '{recipe.strategy}'.{closest(recipe.strategy, STRATEGIES)} "
                          f"Valid: {', '.join(STRATEGIES)}. Received: strategy={recipe.strategy}")
    if recipe.mixed_precision not in PRECISIONS:
        raise RecipeError(f"Unknown mixed_precision '{recipe.mixed_precision}'."
                          f"{closest(recipe.mixed_precision, PRECISIONS)} Valid: {', '.join(PRECISIONS)}. "
                          f"Received: mixed_precision={recipe.mixed_precision}")


def _tpu_resolver():
    """A connected TPU cluster resolver, or None when no TPU is reachable."""
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None


def make_strategy(name: str = "auto"):
    """Builds the `tf.distribute.Strategy` a recipe's `strategy` field names.

    Args:
        name: one of `auto`, `default`, `mirrored`, `tpu`, `multiworker`. Defaults to `"auto"`.

    Example:
        >>> strategy = make_strategy("auto")
        >>> strategy.num_replicas_in_sync
        1
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise RecipeError(f"Unknown strategy '{name}'.{closest(name, STRATEGIES)} Received: strategy={name}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name in ("auto", "tpu"):
        resolver = _tpu_resolver()
        if resolver is not None:
            return tf.distribute.TPUStrategy(resolver)
        if name == "tpu":
            raise RecipeError("strategy = 'tpu' but no TPU could be resolved. Received: strategy=tpu")
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus] if len(cpus) > 1 else None)


def strategy_kind(strategy) -> str:
    """`tpu`, `gpu` or `cpu`: what the strategy's replicas run on."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    devices = getattr(strategy.extended, "worker_devices", None) or ()
    if any("GPU" in d.upper() for d in devices) or (not devices and tf.config.list_logical_devices("GPU")):
        return "gpu"
    return "cpu"


def precision_policy(mode: str, strategy) -> str | None:
    """The Keras dtype policy `mixed_precision` asks for on this strategy's devices (None: float32)."""
    if mode == "off":
        return None
    if mode == "auto":
        return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(strategy_kind(strategy))
    return mode


def apply_precision(mode: str, strategy) -> str:
    """Sets Keras's global dtype policy for a run; returns the policy's name."""
    import keras

    policy = precision_policy(mode, strategy) or "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def global_batch_size(recipe, strategy) -> int:
    """`data.batch_size`, times the number of replicas when `scale_batch_with_replicas` is set."""
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
    return recipe.data.batch_size * (replicas if recipe.scale_batch_with_replicas else 1)


def uses_distribution(recipe) -> bool:
    """Whether a recipe leaves the foundation's single-device path."""
    return recipe.strategy != "default" or recipe.mixed_precision != "off" or recipe.scale_batch_with_replicas


def worker_index() -> tuple[int, int]:
    """(this process's index, the number of workers) from `TF_CONFIG`; (0, 1) without one."""
    import json
    import os

    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        raise RecipeError(f"TF_CONFIG is not valid JSON. Received: TF_CONFIG={os.environ.get('TF_CONFIG')!r}") from None
    cluster = config.get("cluster", {})
    task = config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    index = int(task.get("index", 0)) + (1 if task.get("type") == "worker" and cluster.get("chief") else 0)
    return index, max(workers, 1)


def train_multiworker(recipe, strategy, verbose: int = 2):
    """Trains a recipe under `MultiWorkerMirroredStrategy` with a custom step run by `strategy.run`.

    Keras 3's `model.fit` fails under this strategy (keras-team/keras#20585,
    tensorflow/tensorflow#72388: a `PerReplica` value reaches `_maybe_symbolic_build`, then
    `reduce_per_replica` fails on a scalar). This loop avoids both without touching Keras:
    every worker reads its shard of the same seeded shuffle, each replica computes its loss
    scaled by the global batch (`tf.nn.compute_average_loss`), and the Keras optimizer
    all-reduces the gradients (`_all_reduce_sum_gradients`), so every worker applies the same
    update; non-trainable statistics (batch norm) are averaged across workers after each epoch. All workers run the same number of steps (the shards repeat; an epoch is
    `num_train // global_batch` steps), so no collective waits on a worker that ran out of data.

    Returns:
        `(model, rows, arrays, seconds, times, evaluate)`: the trained model, one dict per
        epoch (loss, accuracy, val_loss, val_accuracy, learning_rate), the data, the training
        wall time, the per-epoch times, and `evaluate(x, y) -> (loss, accuracy)`.
    """
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from kzoo import data as kdata
    from kzoo.recipes.runner import build_model, compile_model, seed_everything

    seed_everything(recipe.seed, recipe.deterministic)
    d = recipe.data
    arrays = kdata.load_arrays(d.dataset, d.data_dir or None, d.validation_split, d.test_split, d.split_seed,
                               d.image_size or None)
    batch = global_batch_size(recipe, strategy)
    steps = len(arrays.x_train) // batch
    if steps < 1:
        raise RecipeError(f"data.batch_size is larger than the training set ({len(arrays.x_train)}). "
                          f"Received: batch_size={batch}")
    with strategy.scope():
        model = build_model(recipe, arrays)
        compile_model(model, recipe, steps)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)

    x_train = arrays.x_train.astype("float32")
    y_train = arrays.y_train

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(batch)
        ds = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        ds = ds.shuffle(len(x_train), seed=recipe.seed, reshuffle_each_iteration=True).repeat()
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        return ds.batch(per_replica, drop_remainder=True).prefetch(2)

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(y, probs), global_batch_size=batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # a LossScaleOptimizer under mixed_float16; else the loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1), tf.cast(y, tf.int64)), tf.float32))
        return loss, correct

    @tf.function
    def train_step(it):
        loss, correct = strategy.run(replica_step, args=next(it))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    # Batch-norm moving statistics are updated locally on each worker; averaging them after
    # each epoch keeps the workers identical (exact for the moving mean, which is linear in the
    # batch means of equal-size shards; close for the moving variance).
    stats = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    @tf.function
    def sync_statistics():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            return [ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v.value)) for v in stats]

        means = strategy.run(replica_fn)
        for v, mean in zip(stats, means):
            v.assign(strategy.experimental_local_results(mean)[0])

    def evaluate(x, y):
        """Loss and accuracy computed locally: every worker holds the same weights."""
        if not len(x):
            return None, None
        probs = np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 512].astype("float32"), training=False))
                                for i in range(0, len(x), 512)])
        probs = np.clip(probs.astype("float64"), 1e-12, 1.0)
        loss = float(-np.mean(np.log(probs[np.arange(len(y)), y])))
        return loss, float(np.mean(np.argmax(probs, -1) == y))

    rows, times = [], []
    start = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        t0 = time.perf_counter()
        total_loss = total_correct = 0.0
        for _ in range(steps):
            loss, correct = train_step(iterator)
            total_loss += float(loss)
            total_correct += float(correct)
        if stats:
            sync_statistics()
        times.append(time.perf_counter() - t0)
        row = {"epoch": epoch, "loss": total_loss / steps, "accuracy": total_correct / (steps * batch)}
        val_loss, val_accuracy = evaluate(arrays.x_val, arrays.y_val)
        if val_loss is not None:
            row.update(val_loss=val_loss, val_accuracy=val_accuracy)
        lr = optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(lr(optimizer.iterations) if callable(lr) else lr))
        rows.append(row)
        if verbose:
            print(f"Epoch {epoch}/{recipe.epochs} - " + " - ".join(
                f"{k}: {v:.4f}" for k, v in row.items() if k != "epoch"), flush=True)
    return model, rows, arrays, time.perf_counter() - start, times, evaluate
