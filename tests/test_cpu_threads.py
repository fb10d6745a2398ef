"""kzoo's thread plan: a run with a small step sizes TensorFlow's pools (two ops at a time, the
cores split between them) on a host without accelerators, and leaves them alone for large steps,
where the user chose, where an accelerator trains, or where TensorFlow's runtime already started."""

import json
import os
import subprocess
import sys

import pytest

import kzoo
from kzoo.cpu_threads import (
    SMALL_STEP_PIXELS,
    ThreadPlan,
    current_plan,
    plan_threads,
    step_pixels,
    usable_cores,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = 64 * 8 * 8  # cnn-digits


@pytest.mark.parametrize("cores, intra, inter", [(1, 1, 1), (2, 1, 2), (3, 1, 2), (16, 8, 2), (64, 32, 2)])
def test_a_small_step_runs_two_ops_at_a_time_with_the_cores_split_between_them(cores, intra, inter):
    assert plan_threads(SMALL, cores, environ={}) == ThreadPlan(intra, inter, "small step")


def test_large_or_unknown_steps_users_choices_and_accelerators_keep_tensorflows_pools():
    assert plan_threads(SMALL_STEP_PIXELS, 2, environ={}) == ThreadPlan(0, 0, "tensorflow")
    assert plan_threads(None, 2, environ={}) == ThreadPlan(0, 0, "tensorflow")
    assert plan_threads(SMALL, 2, environ={"TF_NUM_INTRAOP_THREADS": "3"}) == ThreadPlan(3, 0, "environment")
    assert plan_threads(SMALL, 2, environ={"TF_NUM_INTEROP_THREADS": "x"}) == ThreadPlan(0, 0, "environment")
    assert plan_threads(SMALL, 2, accelerator=True, environ={}) == ThreadPlan(0, 0, "accelerator")
    with pytest.raises(ValueError, match="Received: cores=0"):
        plan_threads(SMALL, 0, environ={})


def test_step_pixels_come_from_the_recipe_without_reading_data():
    load = kzoo.recipes.load
    assert step_pixels(load("cnn-digits")) == 64 * 8 * 8
    assert step_pixels(load("transfer-mnist-digits")) == 10 * 28 * 28  # framed: 20x20 resized, padded by 4
    assert step_pixels(load("fixup-mnist5k")) == 64 * 28 * 28
    assert step_pixels(load("cnn-digits", ["data.image_size=[16, 16]"])) == 64 * 16 * 16
    assert step_pixels(load("resnet20-cifar10")) is None  # a tensorflow-datasets name: its files know


def _run(tmp_path, name, *overrides, env=None):
    """`kzoo run mlp-digits --set epochs=1 ...` in a fresh process; its metrics.json `threads`."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    out = tmp_path / name
    args = [sys.executable, "-m", "kzoo", "run", "mlp-digits", "--out", str(out), "--quiet", "--set", "epochs=1"]
    for o in overrides:
        args += ["--set", o]
    done = subprocess.run(args, env={**environ, **(env or {})}, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "metrics.json").read_text())["threads"]


def test_a_run_sizes_the_pools_to_its_step_and_records_them(tmp_path):
    expected = plan_threads(64 * 8 * 8, usable_cores(), environ={})
    assert _run(tmp_path, "small") == expected.to_dict()
    assert _run(tmp_path, "large", "data.batch_size=512") == {"intra_op": 0, "inter_op": 0, "source": "tensorflow"}
    env = {"TF_NUM_INTRAOP_THREADS": "0", "TF_NUM_INTEROP_THREADS": "0"}
    assert _run(tmp_path, "user", env=env) == {"intra_op": 0, "inter_op": 0, "source": "environment"}


def test_a_run_in_a_started_runtime_records_the_pools_in_force(cli, tmp_path):
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the runtime has started (as in a notebook that ran ops before)
    code, _, err = cli("run", "mlp-digits", "--set", "epochs=1", "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    threads = json.loads((tmp_path / "run" / "metrics.json").read_text())["threads"]
    assert threads == current_plan().to_dict()
    assert (threads["intra_op"], threads["inter_op"]) == (tf.config.threading.get_intra_op_parallelism_threads(),
                                                          tf.config.threading.get_inter_op_parallelism_threads())
    assert threads["source"] in ("started", "environment", "small step")  # "small step": this process's first run
