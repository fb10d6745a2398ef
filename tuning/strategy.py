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
