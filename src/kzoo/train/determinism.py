"""Reproducible and fast by default: seeding, XLA, and which determinism mechanism a step uses.

The engine calls, in this order:

1. `seed_everything(seed, deterministic)` first, before data, model or any compilation.
2. `plan = plan_step(model, deterministic=..., jit_compile=..., strategy=...)` once per compile,
   after the model is built; `plan.apply()` just before
   `model.compile(..., jit_compile=plan.jit_compile)`; `plan.note` (one line, or "") printed.
   `jit_compile_for(recipe, model, setup)` does all of this for `compile_stage`.

What the recipe fields do and cost:

- `deterministic = true`, `jit_compile = true` (the defaults): the train, test and predict steps
  are compiled with XLA where the model compiles and XLA is the faster choice on the device, and
  reproducibility comes from the seeds plus XLA's own determinism:
  - CPU: XLA's kernels are deterministic for a fixed program and thread count; nothing else is
    set. Models with convolutions stay off XLA on CPU, because TensorFlow's oneDNN
    convolutions beat XLA:CPU's (measured on a 2-core x86: ResNet-20's XLA step took twice the
    CPU time); they get op determinism instead, which costs no measurable CPU time there.
  - GPU: `XLA_FLAGS` gets `--xla_gpu_deterministic_ops=true`, the flag TensorFlow itself gives
    XLA under op determinism. It implies `--xla_gpu_exclude_nondeterministic_ops=true`
    (deterministic scatter, reductions, GEMMs and convolutions) and also turns autotuning off,
    which could otherwise pick different kernels in two compilations. It costs the autotuned
    kernel choice and atomics-based scatter. Max pooling's gradient (XLA's select-and-scatter)
    has no deterministic version, so a model with max pooling falls back (below).
  - TPU: every step is an XLA program (TPUStrategy compiles whatever `jit_compile` says) and a
    TPU program is deterministic; the seeds are all that is needed.
  A model XLA cannot compile (a layer with `supports_jit = False`: Keras's RandomTranslation,
  RandomRotation, RandomZoom and RandomCrop, whose `ImageProjectiveTransformV3` has no XLA
  kernel; lookup and hashing layers) falls back to TensorFlow's op determinism without XLA,
  and `plan.note` says so in one line. So does a strategy with several replicas (MirroredStrategy
  over GPUs or logical CPUs): Keras compiles the whole cross-replica step as one XLA program,
  which cannot reach variables on several devices. On GPU op determinism is the slow mode:
  deterministic cuDNN algorithms only, no atomics.
- `deterministic = false`: the same XLA choice with no determinism flag and no op determinism.
  On GPU that brings back autotuning and the fast nondeterministic kernels, and max pooling
  compiles with XLA; on CPU it changes little. Two runs may then differ in the last bits, and
  the difference can grow over training.
- `jit_compile = false`: never XLA; with `deterministic = true`, op determinism.

XLA flags are read once per process, at its first XLA compilation: a later `deterministic =
false` run in the same process keeps the deterministic GPU kernels (a new process does not),
and a flag already in `XLA_FLAGS` keeps the user's value. Outside the compiled step (LSUV's
forward passes, monitors' probes) op determinism is on from `seed_everything` until
`plan.apply()`, and off after it on the XLA path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEVICE_KINDS = ("cpu", "gpu", "tpu")
GPU_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
# Keras layer classes whose XLA step fails on GPU when XLA runs deterministic kernels: the
# max-pooling gradient is select-and-scatter, which XLA has no deterministic version of.
_SELECT_AND_SCATTER_LAYERS = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D")
# Convolutions run slower through XLA:CPU than through TensorFlow's oneDNN kernels, while an
# MLP's step runs faster through XLA: the throughput rows of `python -m benchmarks` say which of
# the two each shipped recipe gets (`details["xla"]` in benchmarks/results.json).
_CONV_LAYERS = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


def seed_everything(seed: int, deterministic: bool = True):
    """Seeds Python, numpy and TensorFlow, and prepares the determinism the run asked for.

    With `deterministic`, also turns TensorFlow's op determinism on, so that what runs before
    the step is compiled (data preparation, LSUV's forward passes) is reproducible on every
    device, and adds XLA's deterministic-kernel flag to `XLA_FLAGS` for GPUs (it must be there
    before the first XLA compilation; on CPU and TPU XLA does not read it). `StepPlan.apply`
    later switches op determinism off for a step XLA compiles, because Keras refuses
    `jit_compile` while it is on.

    Args:
        seed: the run's seed (Python's `random`, numpy and TensorFlow).
        deterministic: make the run reproducible. Defaults to `True`.

    Example:
        >>> seed_everything(0)
        >>> plan = plan_step(model, deterministic=True)
    """
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        add_xla_flag(GPU_DETERMINISTIC_FLAG)
    set_op_determinism(deterministic)


def add_xla_flag(flag: str) -> str:
    """Appends `flag` (`--name=value`) to `XLA_FLAGS` unless that name is already there.

    Returns the resulting `XLA_FLAGS`. A flag the user set keeps the user's value.
    """
    name = flag.split("=", 1)[0]
    current = os.environ.get("XLA_FLAGS", "")
    if any(part.split("=", 1)[0] == name for part in current.split()):
        return current
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()
    return os.environ["XLA_FLAGS"]


def set_op_determinism(on: bool):
    """Switches TensorFlow's op determinism on or off (it is a process-wide setting)."""
    import tensorflow as tf
    from tensorflow.python.framework import config

    if on:
        tf.config.experimental.enable_op_determinism()
    else:
        # TensorFlow has no public switch back; a process that ran a deterministic fallback
        # must still be able to compile the next model with XLA.
        config.disable_op_determinism()


def device_kind(strategy=None) -> str:
    """`tpu`, `gpu` or `cpu`: what the strategy's replicas (or this process) compute on."""
    import tensorflow as tf

    if strategy is not None and "TPU" in type(strategy).__name__:
        return "tpu"
    try:
        devices = tuple(strategy.extended.worker_devices) if strategy is not None else ()
    except (AttributeError, RuntimeError):  # the default strategy has no device list
        devices = ()
    if devices:
        return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def xla_blockers(model, device: str = "cpu", deterministic: bool = True) -> list[str]:
    """Names of the layers that keep `model`'s step from compiling with XLA on `device`.

    A layer counts when Keras marks it `supports_jit = False` (it has an op without an XLA
    kernel), and on GPU with `deterministic`, when it is max pooling (see the module docstring).
    """
    blockers = []
    for layer in model._flatten_layers(include_self=False):
        cls = type(layer).__name__
        if not getattr(layer, "supports_jit", True):
            blockers.append(f"{layer.name} ({cls})")
        elif device == "gpu" and deterministic and cls in _SELECT_AND_SCATTER_LAYERS:
            blockers.append(f"{layer.name} ({cls}, no deterministic XLA gradient)")
    return blockers


def has_convolutions(model) -> bool:
    """Whether any layer of `model` (nested ones included) is a Keras convolution."""
    return any(type(layer).__name__ in _CONV_LAYERS for layer in model._flatten_layers(include_self=False))


@dataclass(frozen=True)
class StepPlan:
    """How one compiled model trains: XLA or not, and what makes it reproducible.

    Attributes:
        jit_compile: what to pass to `model.compile(jit_compile=...)`.
        op_determinism: TensorFlow's op determinism during the fit.
        mechanism: `"xla"` (reproducible through XLA's deterministic mode), `"op_determinism"`
            (no XLA), `"none"` (`deterministic = false`).
        device: `cpu`, `gpu` or `tpu`.
        note: one line for the user when the plan falls back from XLA, else `""`.
    """

    jit_compile: bool
    op_determinism: bool
    mechanism: str
    device: str
    note: str = ""

    def apply(self):
        """Sets TensorFlow's op determinism for this plan; call just before `model.compile`."""
        set_op_determinism(self.op_determinism)
        if self.mechanism == "xla" and self.device == "gpu":
            add_xla_flag(GPU_DETERMINISTIC_FLAG)


def plan_step(model, deterministic: bool = True, jit_compile: bool = True, strategy=None,
              device: str | None = None) -> StepPlan:
    """Decides, once per compile, whether the step is XLA-compiled and what makes it reproducible.

    XLA wherever the model compiles and XLA is the faster choice on the device (CPU included,
    where Keras's own `jit_compile="auto"` never compiles; not for convolutional models on CPU,
    nor under a strategy with several replicas); reproducibility from the seeds and XLA's
    deterministic mode; TensorFlow's op determinism only for a model XLA cannot compile, with a
    one-line `note` saying so. See the module docstring for what each setting costs.

    Args:
        model: the built Keras model.
        deterministic: the recipe's `deterministic`. Defaults to `True`.
        jit_compile: the recipe's `jit_compile`; `False` never compiles with XLA. Defaults to
            `True`.
        strategy: the `tf.distribute.Strategy` the model was built under, if any.
        device: `cpu`, `gpu` or `tpu`. Defaults to what `strategy` (or this process) runs on.

    Returns:
        A `StepPlan`.

    Example:
        >>> plan = plan_step(model, deterministic=True, jit_compile=True)
        >>> plan.apply()
        >>> model.compile(optimizer, loss, jit_compile=plan.jit_compile)
        >>> if plan.note: print(plan.note)
    """
    device = device or device_kind(strategy)
    if device not in DEVICE_KINDS:
        raise ValueError(f"device must be one of {', '.join(DEVICE_KINDS)}. Received: device={device!r}")
    if device == "tpu":
        # TPUStrategy compiles every step with XLA whatever jit_compile says, and a TPU program
        # gives the same result for the same inputs: the seeds are all that is needed.
        return StepPlan(True, False, "xla" if deterministic else "none", device)
    fallback = "op_determinism" if deterministic else "none"
    if not jit_compile:
        return StepPlan(False, deterministic, fallback, device)
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
    if replicas > 1:
        # Keras puts the whole `strategy.run` call inside the jit-compiled function, and one XLA
        # program cannot reach variables on several devices ("Trying to access resource ...
        # located in device CPU:1 from device CPU:0", tried with MirroredStrategy on 2 logical CPUs).
        how = "TensorFlow op determinism instead" if deterministic else "no XLA"
        note = f"XLA off under {type(strategy).__name__} with {replicas} replicas (one XLA program per step cannot span devices); {how}."
        return StepPlan(False, deterministic, fallback, device, note)
    if device == "cpu" and has_convolutions(model):
        # Not a failure, a speed choice: oneDNN's convolutions beat XLA:CPU's (see above).
        return StepPlan(False, deterministic, fallback, device)
    blockers = xla_blockers(model, device, deterministic)
    if blockers:
        how = "TensorFlow op determinism instead (slower)" if deterministic else "no XLA"
        more = f" and {len(blockers) - 1} more" if len(blockers) > 1 else ""
        note = f"XLA off for this model: layer {blockers[0]}{more} cannot be XLA-compiled; {how}."
        return StepPlan(False, deterministic, fallback, device, note)
    return StepPlan(True, False, "xla" if deterministic else "none", device)


_NOTES_SHOWN: set = set()


def jit_compile_for(recipe, model, setup=None) -> bool:
    """The engine's hook in `compile_stage`: plans the step, applies the plan, returns `jit_compile`.

    Prints the plan's note (why XLA is off) once per process and note, on stderr.

    Args:
        recipe: the `Recipe` (its `deterministic` and `jit_compile`).
        model: the built model.
        setup: the run's `kzoo.train.Setup` (its `strategy`). Defaults to `None` (one device).
    """
    import sys

    plan = plan_step(model, recipe.deterministic, recipe.jit_compile, getattr(setup, "strategy", None))
    plan.apply()
    if plan.note and plan.note not in _NOTES_SHOWN:
        _NOTES_SHOWN.add(plan.note)
        print(plan.note, file=sys.stderr)
    return plan.jit_compile
