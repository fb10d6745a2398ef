"""CPU thread pools sized to the training step: small steps run two ops at a time, one thread each.

TensorFlow gives each of its two thread pools one thread per core by default: the inter-op pool
(ops that run side by side) and the intra-op pool (the threads one op splits its work over:
oneDNN's convolutions, Eigen's reductions). A training step has independent ops (a convolution's
filter gradient and its input gradient, the updates of different variables), so two ops that
each split over every core run twice as many threads as there are cores. On small kernels (the
3x3 convolutions of a batch of 8x8 digits) splitting one op costs more than it saves; on large
ones (ResNet-20 on 32x32 images) the split pays. So a run whose batch holds fewer than
`SMALL_STEP_PIXELS` input pixels (batch size x height x width of the model's input) gets
2 inter-op threads and `cores // 2` intra-op threads (at least 1): two independent ops at a
time, no core oversubscribed. Larger steps keep TensorFlow's pools.

On a 2-core x86 CPU (AMD EPYC, tensorflow-cpu 2.21) one thread per op and two ops at a time
ran the steps of cnn-digits, densenet-digits, fixup-digits and transfer-mnist-digits faster than
TensorFlow's pools, and those of fixup-mnist5k and of resnet20 on 32x32 images slower (hence
`SMALL_STEP_PIXELS`). `python -m benchmarks` records the plan of each throughput row and how far
kzoo is ahead of plain Keras on the same threads.

The pools are sized when a run's `Session` starts, because TensorFlow fixes them when its
runtime starts (its first op). kzoo leaves them alone when:

- `TF_NUM_INTRAOP_THREADS` or `TF_NUM_INTEROP_THREADS` is set (0 means TensorFlow's default),
  so `TF_NUM_INTRAOP_THREADS=0 TF_NUM_INTEROP_THREADS=0 kzoo run ...` restores it;
- a GPU or TPU is visible (the step runs there; the host's threads feed the input pipeline);
- TensorFlow's runtime has already started (ops ran before the run, as in a notebook that
  trained before, or a tuner's later trials, which keep the first trial's pools).

Thread counts change the order of floating-point sums inside some kernels, so a run is
reproducible bit for bit under the same pools; each run records them in `metrics.json`
(`threads`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

ENVIRONMENT = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
INTER_OP = 2  # ops at a time in a small step
# Batch size x height x width of the model's input under which a step counts as small: between
# the largest step that ran faster with one thread per op (transfer-mnist-digits, 10 x 28 x 28)
# and the smallest that ran slower (fixup-mnist5k, 64 x 28 x 28).
SMALL_STEP_PIXELS = 16384


@dataclass(frozen=True)
class ThreadPlan:
    """The thread pools a process trains with.

    Args:
        intra_op: threads one op splits its work over (0: TensorFlow's default, one per core).
        inter_op: ops that run at the same time (0: TensorFlow's default, one per core).
        source: who chose them: `small step` (kzoo's plan), `tensorflow` (a large or unknown
            step keeps TensorFlow's pools), `environment`, `accelerator` or `started` (the
            runtime had started: the pools in force are kept).
    """

    intra_op: int
    inter_op: int
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _count(value) -> int:
    """A `TF_NUM_*_THREADS` value as TensorFlow reads it (unset or not a number: 0, its default)."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def plan_threads(step_pixels: int | None, cores: int | None = None, accelerator: bool = False,
                 environ=None) -> ThreadPlan:
    """kzoo's thread plan for a step of `step_pixels` input pixels on `cores` usable cores.

    Args:
        step_pixels: batch size x height x width of the model's input (`step_pixels`); `None`
            when unknown (TensorFlow's pools are kept).
        cores: usable cores. Defaults to `usable_cores()`.
        accelerator: whether a GPU or TPU is visible (then TensorFlow's pools are kept).
        environ: the environment to read `TF_NUM_*_THREADS` from. Defaults to `os.environ`.
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in ENVIRONMENT):
        return ThreadPlan(_count(environ.get(ENVIRONMENT[0])), _count(environ.get(ENVIRONMENT[1])), "environment")
    if accelerator:
        return ThreadPlan(0, 0, "accelerator")
    if step_pixels is None or step_pixels >= SMALL_STEP_PIXELS:
        return ThreadPlan(0, 0, "tensorflow")
    cores = usable_cores() if cores is None else cores
    if cores < 1:
        raise ValueError(f"cores must be at least 1. Received: cores={cores}")
    inter = min(INTER_OP, cores)
    return ThreadPlan(max(1, cores // inter), inter, "small step")


def step_pixels(recipe) -> int | None:
    """Batch size x height x width of the model's input, from the recipe alone (no data read):
    the [finetune] framing's output size, else `data.image_size`, else the registered dataset's
    shape; `None` for a dataset whose shape only its files know."""
    from kzoo.data.catalog import DATASETS

    d, ft = recipe.data, recipe.finetune
    if ft.stages and ft.resize:
        h, w = ft.resize
    elif d.image_size:
        h, w = d.image_size
    elif d.dataset in DATASETS.list():
        h, w = DATASETS.meta(d.dataset)["input_shape"][:2]
    else:
        return None
    pad = 2 * int(ft.pad) if ft.stages else 0
    return int(d.batch_size) * (int(h) + pad) * (int(w) + pad)


_APPLIED: ThreadPlan | None = None


def apply_threads(recipe) -> ThreadPlan:
    """Sizes TensorFlow's pools by `plan_threads` for `recipe`'s step unless its runtime has
    started, and returns the plan in force (`current_plan` keeps it). Called by `Session`."""
    global _APPLIED
    import tensorflow as tf

    from kzoo.train.determinism import device_kind

    plan = plan_threads(step_pixels(recipe), accelerator=device_kind() != "cpu")
    started = None
    if plan.source == "small step":
        try:  # TensorFlow accepts the values it already has, also after its runtime started
            tf.config.threading.set_intra_op_parallelism_threads(plan.intra_op)
            tf.config.threading.set_inter_op_parallelism_threads(plan.inter_op)
        except RuntimeError:
            started = True
    elif plan.source == "tensorflow" and _APPLIED is not None and _APPLIED.source == "small step":
        started = True  # an earlier run in this process sized the pools; they stay
    if started:
        plan = ThreadPlan(tf.config.threading.get_intra_op_parallelism_threads(),
                          tf.config.threading.get_inter_op_parallelism_threads(), "started")
    _APPLIED = plan
    return plan


def current_plan() -> ThreadPlan | None:
    """The plan `apply_threads` last found in force (None before any run in this process)."""
    return _APPLIED
