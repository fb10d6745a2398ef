"""Distribution strategies, mixed precision and batch scaling from a recipe's top-level fields,
decided once for every training path.

`strategy`:
- `default`: TensorFlow's default strategy (one device; what `kzoo run` always did).
- `auto`: `TPUStrategy` when a TPU resolves, `MirroredStrategy` with more than one GPU,
  the default strategy otherwise.
- `mirrored`: `MirroredStrategy` over every GPU, or over the logical CPUs when there are no
  GPUs and the CPU was split (`tf.config.set_logical_device_configuration`).
- `tpu`: `TPUStrategy` (fails with a `RecipeError` when no TPU resolves).
- `multiworker`: `MultiWorkerMirroredStrategy`; the cluster comes from `TF_CONFIG`.

`mixed_precision`: `auto` (the default: bfloat16 compute where the hardware has it and the step
gains, see `precision_policy`), `off`, `mixed_float16` or `mixed_bfloat16`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from kzoo.errors import RecipeError, closest
from kzoo.train.determinism import device_kind
from kzoo.zoo.registry import MODELS

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
    # One MirroredStrategy per process, reused by later runs: a second one over the same devices
    # fails in its first all-reduce (InvalidArgumentError at CollectiveReduceV2, TF 2.21).
    if "mirrored" not in _STRATEGIES:
        gpus = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")
        devices = [d.name for d in gpus] or ([d.name for d in cpus] if len(cpus) > 1 else None)
        _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy(devices)
    return _STRATEGIES["mirrored"]


_STRATEGIES: dict = {}


def precision_policy(mode: str, strategy, recipe=None) -> str | None:
    """The Keras dtype policy `mixed_precision` asks for on this strategy's devices (None: float32).

    `auto` (the default) computes in bfloat16, with float32 variables, where the hardware does
    so natively; bfloat16 keeps float32's range, so no loss scaling is involved:
    - TPU: `mixed_bfloat16`.
    - GPU: `mixed_bfloat16` from compute capability 8.0 (Ampere) on; float32 on older GPUs
      (`mixed_float16` is there to ask for; Keras then adds loss scaling).
    - CPU: `mixed_bfloat16` for a convolutional network on a CPU with native bfloat16 (the
      `avx512_bf16` or `amx_bf16` flag), whose step runs oneDNN's bfloat16 kernels, which take
      less CPU time than float32's there. Float32 for an MLP, whose step XLA compiles: there
      bfloat16 costs more CPU time than float32. Float32 for Fixup networks, which have
      no normalization to keep activations in range: in bfloat16 they reach a lower accuracy.
      (Measured on a 2-core x86 with `avx512_bf16` when the rule was chosen; no results file
      holds those timings, so no figure is given here.)
    Half-precision compute changes the numbers a run produces: runs are reproducible on one
    machine, and machines that differ in these features train in different precisions.

    Args:
        mode: the recipe's `mixed_precision`.
        strategy: the `tf.distribute.Strategy` the run uses.
        recipe: the `Recipe` (is its network convolutional?). Defaults to `None`: not.
    """
    if mode == "off":
        return None
    if mode != "auto":
        return mode
    kind = device_kind(strategy)
    if kind == "tpu" or (kind == "gpu" and gpu_has_bf16()):
        return "mixed_bfloat16"
    if kind == "cpu" and recipe is not None and convolutional(recipe) and cpu_has_bf16():
        return "mixed_bfloat16"
    return None


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this x86 CPU computes bfloat16 natively (the `avx512_bf16` or `amx_bf16` flag)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_bf16() -> bool:
    """Whether every visible GPU has compute capability 8.0 or above (bfloat16 tensor cores)."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0) for g in gpus]
    return bool(gpus) and min(capabilities) >= (8, 0)


def convolutional(recipe) -> bool:
    """Whether `auto` precision treats the recipe's network as a normalized convolutional one: a
    zoo model outside the `mlp` and `fixup` families, or a backbone that is not a zoo model
    (Keras applications, KerasHub, a saved image model)."""
    backbone = recipe.finetune.backbone
    name = backbone or recipe.model.get("name", "")
    if name in MODELS:
        return MODELS.meta(name).get("family") not in ("mlp", "fixup")
    return bool(backbone)


def apply_precision(mode: str, strategy, recipe=None) -> str:
    """Sets Keras's global dtype policy for a run; returns the policy's name."""
    policy = precision_policy(mode, strategy, recipe) or "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def global_batch_size(recipe, strategy) -> int:
    """`data.batch_size`, times the number of replicas when `scale_batch_with_replicas` is set."""
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
    return recipe.data.batch_size * (replicas if recipe.scale_batch_with_replicas else 1)


def uses_distribution(recipe) -> bool:
    """Whether a recipe leaves the foundation's single-device path."""
    return recipe.strategy != "default" or recipe.scale_batch_with_replicas


def worker_index() -> tuple[int, int]:
    """(this process's index, the number of workers) from `TF_CONFIG`; (0, 1) without one."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        raise RecipeError(f"TF_CONFIG is not valid JSON. Received: TF_CONFIG={os.environ.get('TF_CONFIG')!r}") from None
    cluster = config.get("cluster", {})
    task = config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    index = int(task.get("index", 0)) + (1 if task.get("type") == "worker" and cluster.get("chief") else 0)
    return index, max(workers, 1)


@dataclass
class Setup:
    """What a recipe's device fields resolve to, once per run: the strategy (None on the default
    single-device path) and the global batch size (the dtype policy is set globally)."""

    strategy: Any = None
    batch_size: int = 64

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def replicas(self) -> int:
        return int(getattr(self.strategy, "num_replicas_in_sync", 1) or 1) if self.strategy is not None else 1

    @property
    def multiworker(self) -> bool:
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)


def decide(recipe, strategy=None) -> Setup:
    """The recipe's strategy (or `strategy`, one a caller already made), with Keras's global dtype
    policy set for it, and the global batch size. Callers restore the global policy after."""
    if strategy is None and uses_distribution(recipe):
        strategy = make_strategy(recipe.strategy)  # first: MultiWorkerMirroredStrategy must precede other ops
    apply_precision(recipe.mixed_precision, strategy or tf.distribute.get_strategy(), recipe)
    batch = global_batch_size(recipe, strategy) if strategy is not None else recipe.data.batch_size
    return Setup(strategy=strategy, batch_size=batch)


def resolve_steps_per_execution(recipe, steps_per_epoch: int, callbacks=(), strategy=None) -> int:
    """Steps run per call into the compiled graph. `0` (auto): the largest divisor of the steps
    per epoch up to 32, which removes most per-step Python overhead on small models; 1 when a
    callback needs to act between any two steps (it sets `needs_every_step = True`: the
    divergence guard, a scheduled momentum, the adaptive update-ratio monitor), and 1 under a
    strategy with several replicas: Keras's multi-step loop fails under `MirroredStrategy` there
    on TF 2.21 / Keras 3.15 (`You must feed a value for placeholder tensor ...
    [Op:__inference_multi_step_on_iterator]`). The training-dynamics monitors measure inside the
    step or at the ends of calls, so they keep the auto value.

    It must divide the steps per epoch: Keras runs whole calls, so with 55 steps an epoch and 32
    a call every epoch would take 64 batches, borrow the next epoch's, and a later epoch would
    find the data used up and train on nothing. An explicit recipe value that does not divide
    them, or above 1 beside a callback that needs every step (which would then act only every
    few steps), is refused (`RecipeError`)."""
    every_step = [type(cb).__name__ for cb in callbacks if getattr(cb, "needs_every_step", False)]
    if recipe.steps_per_execution:
        if steps_per_epoch % recipe.steps_per_execution:
            raise RecipeError(
                f"steps_per_execution must divide the {steps_per_epoch} steps of an epoch "
                f"({', '.join(map(str, _divisors(steps_per_epoch)))}), or be 0 for auto. "
                f"Received: steps_per_execution={recipe.steps_per_execution}")
        if recipe.steps_per_execution > 1 and every_step:
            raise RecipeError(
                f"steps_per_execution must be 1 or 0 (auto) while {', '.join(every_step)} acts after every step. "
                f"Received: steps_per_execution={recipe.steps_per_execution}")
        return recipe.steps_per_execution
    if every_step:
        return 1
    if strategy is not None and int(getattr(strategy, "num_replicas_in_sync", 1) or 1) > 1:
        return 1
    return max(d for d in _divisors(steps_per_epoch) if d <= 32)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
