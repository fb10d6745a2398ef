"""The step function for `strategy = "multiworker"`, in the same loop and with the same callbacks
as every other path: Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585, tensorflow/tensorflow#72388).

Every worker reads its shard of the same seeded shuffle (`worker_shard` of the splits: a
streamed source decodes only its own shard's files) and the optimizer all-reduces the gradients,
so all apply the same update. All run `num_train // global_batch` steps an epoch (the shards
repeat), so no collective waits on a worker that ran out of data. Validation and test stream
the splits' `val` and `test` batches on every worker.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kzoo.train.metrics import metric_names, metric_stats, metric_values


def per_example_loss(model):
    """The model's compiled loss (`kzoo.train.losses.ClassificationLoss`) giving one value per
    example, for sums over replicas and batches."""
    return type(model.loss).from_config({**model.loss.get_config(), "reduction": None})


def evaluate_locally(model, batches, names=("accuracy",)) -> dict | None:
    """`{"loss": ..., <each of the metrics names>: ...}` over `batches` (a `tf.data.Dataset` of
    `(x, y)` batches, or `None`), with the compiled loss, computed on this worker: every worker
    holds the same weights. `None` for no data."""
    if batches is None:
        return None
    loss_fn = per_example_loss(model)
    total_loss, totals = 0.0, {}
    for x, y in batches:
        probs = model(tf.cast(x, tf.float32), training=False)
        total_loss += float(np.sum(keras.ops.convert_to_numpy(loss_fn(y, probs)).astype("float64")))
        for key, value in metric_stats(y, probs, names).items():
            totals[key] = totals.get(key, 0.0) + np.asarray(keras.ops.convert_to_numpy(value), "float64")
    if not totals or not totals["count"]:
        return None
    return {"loss": total_loss / float(totals["count"]), **metric_values(names, totals)}


def fit_multiworker(model, data, setup, recipe, start, end, steps, callbacks, verbose):
    """One stage under `MultiWorkerMirroredStrategy`, with `kzoo.train.loop.keras_fit`'s signature."""
    strategy, batch = setup.strategy, setup.batch_size
    optimizer = model.optimizer
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(batch)
        ds = data.worker_shard(context.input_pipeline_id, context.num_input_pipelines, recipe.seed + start)
        return data.mixed(ds.batch(per_replica, drop_remainder=True), recipe.seed, start, steps,
                          context.input_pipeline_id).prefetch(2)

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    loss_fn, names = per_example_loss(model), metric_names(recipe)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(y, probs), global_batch_size=batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # a LossScaleOptimizer under mixed_float16; else the loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, metric_stats(y, probs, names)

    @tf.function
    def train_step(it):
        loss, stats = strategy.run(replica_step, args=next(it))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in stats.items()})

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

    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=end, steps=steps, verbose=0)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(start, end):
        if model.stop_training:
            break
        hooks.on_epoch_begin(epoch)
        total_loss, totals = 0.0, {}
        for step in range(steps):
            hooks.on_train_batch_begin(step)
            loss, step_stats = train_step(iterator)
            total_loss += float(loss)
            for key, value in step_stats.items():
                totals[key] = totals.get(key, 0.0) + np.asarray(value, "float64")
            hooks.on_train_batch_end(step, {"loss": total_loss / (step + 1)})
        if stats:
            sync_statistics()
        logs = {"loss": total_loss / steps, **metric_values(names, totals)}
        hooks.on_test_begin()  # as in Keras's fit: SwapEMAWeights validates the averaged weights
        val = evaluate_locally(model, data.val, names)
        hooks.on_test_end()
        logs.update({f"val_{k}": v for k, v in (val or {}).items()})
        hooks.on_epoch_end(epoch, logs)
        if verbose:
            print(f"Epoch {epoch + 1}/{end} - " + " - ".join(
                f"{k}: {v:.4f}" for k, v in logs.items() if isinstance(v, float)), flush=True)
    optimizer.finalize_variable_values(model.trainable_weights)  # the averages, as Keras's fit ends
    hooks.on_train_end()
