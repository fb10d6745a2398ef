"""`python -m benchmarks.gpu_check [--cpu]`: kzoo's accelerator paths in one go, within 8 minutes.

On a machine with an NVIDIA GPU it installs the `gpu` extra (`pip install -e '.[gpu]'`), then
runs, each step in its own process so that one failure (or crash) is recorded and the next
step still runs:

- `devices`: TensorFlow's version and the GPUs it sees;
- `mixed_precision`: `kzoo run cnn-digits` with `mixed_float16` (`--cpu`: mlp-digits, `mixed_bfloat16`);
- `xla`: mlp, cnn and resnet20 steps planned by `kzoo.train.determinism`, trained twice in two
  processes: whether XLA compiled them and whether the two runs ended with identical weights;
- `mirrored`: `kzoo run mlp-digits` under `strategy = "mirrored"` (two logical CPUs on CPU);
- `resnet20`: ResNet-20 training throughput on synthetic 32x32 data, kzoo's step (as
  `kzoo.train.determinism` plans it) against plain Keras `model.fit` with Keras's defaults;
- `finetune`: a two-stage `[finetune] stages` recipe through `kzoo.recipes.run`;
- `tune`: a two-trial `kzoo tune mlp-digits`.

`--cpu` runs the steps in two processes instead of nine (importing TensorFlow is most of a tiny
step), with tiny sizes: 1-epoch runs, a narrow cnn, ResNet-8 on 128 images for the throughput.

Writes `benchmarks/results-gpu.json` and `results-gpu.md` (`--cpu`: `results-gpu-check-cpu.*`,
so a CPU rehearsal never overwrites GPU figures). With `--cpu` nothing is installed, the
sizes are tiny and TensorFlow is kept off any GPU, so the test suite can run every step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import describe, git_state, provenance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUDGET_SECONDS = 480
# Step name -> timeout in seconds on a GPU machine (each step in its own process there).
STEPS = {"install": 240, "devices": 60, "mixed_precision": 90, "xla": 90, "xla_again": 90, "mirrored": 90,
         "resnet20": 120, "finetune": 90, "tune": 120}
# With --cpu, steps share two processes (TensorFlow's import is most of a tiny step); `xla_again`
# must not share the first one's, since it checks that a fresh process gets the same weights.
CPU_GROUPS = (("devices", "mixed_precision", "xla", "resnet20", "finetune", "tune"), ("xla_again", "mirrored"))
CPU_GROUP_TIMEOUT = 240


# --- the steps: each runs in its own process and returns a dict of findings -------------------


def step_devices(cpu: bool, tiny: bool, workdir: str) -> dict:
    import tensorflow as tf

    from kzoo.train.determinism import device_kind

    gpus = tf.config.list_physical_devices("GPU")
    return {"tensorflow": tf.__version__, "gpus": [g.name for g in gpus], "device_kind": device_kind(),
            "built_with_cuda": bool(tf.test.is_built_with_cuda())}


def step_mixed_precision(cpu: bool, tiny: bool, workdir: str) -> dict:
    import kzoo

    policy = "mixed_bfloat16" if cpu else "mixed_float16"
    recipe = kzoo.recipes.load("mlp-digits" if tiny else "cnn-digits",
                               ["epochs=1" if tiny else "epochs=3", f"mixed_precision={policy}"])
    result = kzoo.recipes.run(recipe, out=os.path.join(workdir, "mixed_precision"), verbose=0)
    # the softmax head stays float32 by design; the layers before it compute in the policy
    return {"policy": policy, "layer_policies": sorted({layer.dtype_policy.name for layer in result.model.layers}),
            "test_accuracy": result.metrics["test_accuracy"],
            "samples_per_second": result.metrics["samples_per_second"]}


def _xla_digests(tiny: bool) -> dict:
    """Trains three small models with the planned step; their plan and final-weight digest."""
    import hashlib

    import keras
    import numpy as np

    import kzoo
    from benchmarks.training import synthetic_arrays
    from kzoo.data.core import make_epoch_dataset
    from kzoo.train.determinism import plan_step, seed_everything

    out = {}
    # cnn without its translation augmentation, which has no XLA kernel; under --cpu a narrow
    # cnn and no resnet20, whose XLA compilation alone takes ~30 s of CPU.
    cases = [("mlp", kzoo.recipes.load("mlp-digits"), None),
             ("cnn", kzoo.recipes.load("cnn-digits", ["data.augment.translation=0.0"]
                                       + (["model.filters=[8, 16]"] if tiny else [])), None)]
    if not tiny:
        cases.append(("resnet20", kzoo.recipes.load("resnet20-cifar10", ["data.augment.crop=0", "data.augment.flip=none"]),
                      synthetic_arrays(1024)))
    for name, recipe, arrays in cases:
        arrays = arrays if arrays is not None else kzoo.data.load_arrays(recipe.data.dataset)
        seed_everything(recipe.seed, True)
        model = _build(recipe, arrays)
        plan = plan_step(model, deterministic=True)
        plan.apply()
        bs = recipe.data.batch_size
        steps = max(1, len(arrays.x_train) // bs)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy",
                      jit_compile=plan.jit_compile, steps_per_execution=1)
        ds = make_epoch_dataset(arrays.x_train[:steps * bs], arrays.y_train[:steps * bs], bs, recipe.seed, 2)
        model.fit(ds, epochs=2, steps_per_epoch=steps, verbose=0)
        weights = b"".join(np.asarray(w).tobytes() for w in model.get_weights())
        out[name] = {"jit_compile": bool(model.jit_compile), "mechanism": plan.mechanism, "note": plan.note,
                     "digest": hashlib.sha1(weights).hexdigest()[:16]}
    return out


def _build(recipe, arrays):
    from kzoo.train import build_model

    return build_model(recipe, arrays)


def step_xla(cpu: bool, tiny: bool, workdir: str) -> dict:
    return _xla_digests(tiny)


step_xla_again = step_xla


def step_mirrored(cpu: bool, tiny: bool, workdir: str) -> dict:
    import kzoo

    recipe = kzoo.recipes.load("mlp-digits", ["epochs=1" if tiny else "epochs=3", "strategy=mirrored"])
    result = kzoo.recipes.run(recipe, out=os.path.join(workdir, "mirrored"), verbose=0)
    return {"test_accuracy": result.metrics["test_accuracy"], "replicas": _replicas(),
            "samples_per_second": result.metrics["samples_per_second"]}


def _replicas() -> int:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return len(gpus) or len(tf.config.list_logical_devices("CPU"))


def step_resnet20(cpu: bool, tiny: bool, workdir: str) -> dict:
    import kzoo
    from benchmarks import training

    # Under --cpu a ResNet-8 (depth 6n + 2 with n = 1) on 128 images: the same code path, a tenth of the work.
    recipe = kzoo.recipes.load("resnet20-cifar10", ["data.augment.crop=0", "data.augment.flip=none"]
                               + (["model.depth=8"] if tiny else []))
    n = 128 if tiny else 8192
    result = training.throughput("resnet20 (32x32 synthetic)", recipe, training.synthetic_arrays(n),
                                 epochs=1, repeats=1 if tiny else 3)
    return {"kzoo_samples_per_second": round(result.kzoo, 1), "keras_samples_per_second": round(result.baseline, 1),
            "ratio": round(result.ratio, 3), "note": result.note, "images": n}


FINETUNE_RECIPE = """\
name = "gpu-check-finetune"
seed = 0
[data]
dataset = "digits"
batch_size = 32
[model]
name = "cnn"
filters = [16, 32]
bn_momentum = 0.9
[finetune]
stages = ["head:{e}@1e-3", "all:{e}@1e-4"]
"""


def step_finetune(cpu: bool, tiny: bool, workdir: str) -> dict:
    import kzoo

    path = os.path.join(workdir, "finetune.toml")
    with open(path, "w") as f:
        f.write(FINETUNE_RECIPE.format(e=1 if tiny else 2))
    result = kzoo.recipes.run(path, out=os.path.join(workdir, "finetune"), verbose=0)
    return {"test_accuracy": result.metrics["test_accuracy"], "epochs_run": result.metrics["epochs_run"]}


def step_tune(cpu: bool, tiny: bool, workdir: str) -> dict:
    from kzoo.cli import main as kzoo_main

    out = os.path.join(workdir, "tune")
    code = kzoo_main(["tune", "mlp-digits", "--tuner", "random", "--max-trials", "2", "--epochs", "1" if tiny else "3",
                      "--out", out, "--quiet"])
    if code:
        raise RuntimeError(f"kzoo tune exited with {code}")
    import csv

    with open(os.path.join(out, "trials.csv")) as f:
        trials = list(csv.DictReader(f))
    return {"trials": len(trials), "completed": sum(t["status"] == "completed" for t in trials),
            "best_val_accuracy": max(float(t["val_accuracy"] or 0) for t in trials)}


# --- the driver ----------------------------------------------------------------------------------


def _run_group(names, cpu: bool, tiny: bool, workdir: str, timeout: float) -> list[dict]:
    """Runs steps in one fresh process; each step's findings, or its failure as one line."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a rehearsal on the CPU even where a GPU exists
    start = time.perf_counter()
    if names == ("install",):
        cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[gpu]"]
    else:
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--step", ",".join(names), "--workdir", workdir]
        cmd += ["--cpu"] * cpu + ["--tiny"] * tiny
    error = None
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, code = _text(e.stdout), _text(e.stderr), None
        error = f"timed out after {timeout:.0f} s"
    found = {}
    for line in stdout.splitlines():
        if line.startswith("GPU_CHECK "):
            result = json.loads(line[len("GPU_CHECK "):])
            found[result["step"]] = result
    if names == ("install",) and code == 0:
        found["install"] = {"step": "install", "ok": True, "seconds": round(time.perf_counter() - start, 1)}
    if error is None:
        tail = [line for line in (stderr or stdout).strip().splitlines() if line.strip()]
        error = (tail[-1] if tail else f"exit code {code}")[:300]
    return [found.get(name) or {"step": name, "ok": False, "seconds": 0.0, "error": error} for name in names]


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def run_steps(names, cpu: bool, tiny: bool, workdir: str):
    """Runs steps in this process (the child side of `_run_group`), printing one line each."""
    if cpu:
        _split_cpu()
    for name in names:
        start = time.perf_counter()
        try:
            result = {"ok": True, **globals()[f"step_{name}"](cpu, tiny, workdir)}
        except Exception as e:  # a step's failure is a finding, not the end of the check
            result = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
        result = {"step": name, "seconds": round(time.perf_counter() - start, 1), **result}
        print("GPU_CHECK " + json.dumps(result, default=str), flush=True)


def run_check(cpu: bool, out_dir: str, tiny: bool | None = None, budget: float = BUDGET_SECONDS) -> dict:
    """Runs every step within `budget` seconds; writes and returns the results."""
    tiny = cpu if tiny is None else tiny
    started = time.perf_counter()
    git_state()  # the commit the check starts on
    workdir = tempfile.mkdtemp(prefix="kzoo-gpu-check-")
    groups = [(g, CPU_GROUP_TIMEOUT) for g in CPU_GROUPS] if cpu else [((name,), t) for name, t in STEPS.items()]
    results = []
    for names, timeout in groups:
        left = budget - (time.perf_counter() - started)
        if left < 5:
            results += [{"step": n, "ok": False, "seconds": 0.0, "error": "skipped: the time budget is spent"}
                        for n in names]
            continue
        for result in _run_group(names, cpu, tiny, workdir, min(timeout, left)):
            results.append(result)
            print(f"{result['step']}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']} s"
                  f"{'' if result['ok'] else '  ' + result['error']}", flush=True)
    _compare_xla(results)
    payload = {"command": "python -m benchmarks.gpu_check" + (" --cpu" if cpu else ""), "mode": "cpu" if cpu else "gpu",
               "tiny": tiny, **provenance(), "seconds": round(time.perf_counter() - started, 1), "steps": results}
    stem = "results-gpu-check-cpu" if cpu else "results-gpu"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(markdown(payload))
    return payload


def _compare_xla(results):
    """Adds to the `xla_again` step whether each model's weights matched the first run's."""
    by_name = {r["step"]: r for r in results}
    first, again = by_name.get("xla"), by_name.get("xla_again")
    if not (first and again and first["ok"] and again["ok"]):
        return
    again["identical"] = {m: first[m]["digest"] == again[m]["digest"] for m in first if isinstance(first[m], dict)}


def markdown(payload: dict) -> str:
    lines = [f"GPU check (`python -m benchmarks.gpu_check{' --cpu' if payload['mode'] == 'cpu' else ''}`) "
             f"{describe(payload)}: mode {payload['mode']}, {payload.get('cpu', '')}, load average "
             f"{payload.get('load_average')}, {payload['date']}, {payload['seconds']} s", "",
             "| step | result | seconds | findings |", "|---|---|---|---|"]
    for r in payload["steps"]:
        findings = r.get("error") or json.dumps({k: v for k, v in r.items() if k not in ("step", "ok", "seconds")})
        lines.append(f"| {r['step']} | {'ok' if r['ok'] else 'FAILED'} | {r['seconds']} | {findings.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="rehearse every step on the CPU, tiny sizes, no install")
    parser.add_argument("--out", default=HERE, help="folder for the results files. Defaults to benchmarks/")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # comma-separated: the child side
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        run_steps(args.step.split(","), args.cpu, args.tiny, args.workdir or tempfile.mkdtemp())
        return 0
    payload = run_check(args.cpu, args.out)
    failed = [r["step"] for r in payload["steps"] if not r["ok"]]
    print(f"wrote {args.out}: {len(payload['steps']) - len(failed)} steps ok"
          f"{', failed: ' + ', '.join(failed) if failed else ''} in {payload['seconds']} s")
    return 0


def _split_cpu():
    """Two logical CPUs, so MirroredStrategy has two replicas without a GPU."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


if __name__ == "__main__":
    sys.exit(main())
