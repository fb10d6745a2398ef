"""`python -m benchmarks.multiworker_memory`: peak memory of a two-worker run on image folders.

Generates folders of 700 and 2,800 JPEGs (64x64 RGB, 4 classes told apart by their colour) under
`benchmarks/out/`, and trains on each with `kzoo run --set strategy="multiworker"`: two processes
on 127.0.0.1 (`TF_CONFIG`), a one-layer MLP, 2 epochs. Each worker decodes only its shard of
the training files (`worker_shard`) and streams the validation and test batches, so its memory
while it trains should not grow with the folder: decoded into float32 arrays, as the
multi-worker path once did, each 64x64 image takes 48 KB, and more in the copies on the way.

Each worker runs `kzoo run` in-process under `--worker`, which records two figures: the
process's peak resident set (`ru_maxrss`, TensorFlow's import included), and the peak from
the first training step to the end of the run (Linux's `VmHWM`, reset through
`/proc/self/clear_refs` when training starts). The second leaves out what happens before
training on every path: building the model reads a bounded sample of the training split (the
standardization statistics), which grows with the folder up to its cap. The check: every
worker's training peak grows by less than 50 KB per extra image from the small folder to the
large one. Writes `benchmarks/results-multiworker.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
SIZE = 64
# A class's mean colour (RGB); every image adds a random pattern on top, so files differ.
COLOURS = {"amber": (200, 140, 40), "moss": (70, 150, 60), "slate": (80, 100, 170), "wine": (150, 40, 80)}
GROWTH_LIMIT_KB = 50
EPOCHS = 2

RECIPE = """
name = "multiworker-memory"
seed = 0
epochs = {epochs}
[data]
dataset = "{folder}"
image_size = [{size}, {size}]
batch_size = 32
[model]
name = "mlp"
depth = 1
width = 16
[optimizer]
name = "adam"
lr = 0.003
"""


def make_folder(n: int, root: str, size: int = SIZE, seed: int = 0) -> str:
    """`n` JPEGs of `size`x`size` in 4 class folders (a class colour plus noise and a random
    bright square). Reused when already complete."""
    import numpy as np
    from PIL import Image

    done = os.path.join(root, ".complete")
    if os.path.isfile(done):
        return root
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(n):
        name = names[i % len(names)]
        pixels = np.asarray(COLOURS[name], "float32") + rng.normal(0, 30, (size, size, 3))
        side = int(rng.integers(size // 8, size // 2))
        top, left = rng.integers(0, size - side, 2)
        pixels[top:top + side, left:left + side] += 60
        Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(
            os.path.join(root, name, f"{i:05d}.jpg"), quality=90)
    with open(done, "w") as f:
        f.write(str(n))
    return root


def write_recipe(folder: str, path: str, epochs: int = EPOCHS, size: int = SIZE) -> str:
    with open(path, "w") as f:
        f.write(RECIPE.format(folder=folder, epochs=epochs, size=size))
    return path


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _status_mb(field: str) -> float | None:
    """A `/proc/self/status` memory field (`VmHWM`, `VmRSS`) in MB, or `None` off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Resets this process's peak resident set (`VmHWM`); `False` where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(args) -> int:
    """`kzoo ARGS` in this process, then one JSON line: its exit code, the process's peak
    resident MB and the peak from the start of training (the first `fit_multiworker` call)."""
    import resource

    import kzoo.train.loop as loop
    from kzoo.cli import main as kzoo_main

    fit, marks = loop.fit_multiworker, {}

    def measured_fit(*fit_args, **kwargs):
        if not marks:  # the first stage starts: the peak is counted afresh from here
            marks["before_train_peak_mb"] = _status_mb("VmHWM")
            marks["reset"] = _reset_peak()
        return fit(*fit_args, **kwargs)

    loop.fit_multiworker = measured_fit  # looked up when each stage starts
    code = kzoo_main([str(a) for a in args])
    train_peak = _status_mb("VmHWM") if marks.get("reset") else None
    before = marks.get("before_train_peak_mb")
    # `ru_maxrss` is the same high-water mark, so the reset cleared it too: take the larger.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, before or 0.0)
    print(json.dumps({"rc": code, "peak_mb": round(peak, 1),
                      "before_train_peak_mb": None if before is None else round(before, 1),
                      "train_peak_mb": None if train_peak is None else round(train_peak, 1)}), flush=True)
    return code


def worker_process(*args, env=None):
    """`worker(ARGS)` in its own process (its own TensorFlow), output merged into one pipe."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.multiworker_memory", "--worker", *map(str, args)],
                            env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_workers(recipe: str, out_dir: str, ports=free_ports, timeout: float = 600) -> dict:
    """Trains `recipe` with two multi-worker processes into `out_dir/w0` and `w1`; returns the
    wall time and each worker's exit code, peaks (MB) and metrics."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports(2)]}
    began = time.perf_counter()
    procs = [worker_process("run", recipe, "--set", 'strategy="multiworker"', "--out",
                            os.path.join(out_dir, f"w{i}"), "--overwrite", "--quiet",
                            env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    seconds = time.perf_counter() - began
    workers = []
    for i, (p, output) in enumerate(zip(procs, outputs)):
        lines = [line for line in output.strip().splitlines() if line.startswith("{")]
        worker = {"index": i, **(json.loads(lines[-1]) if lines else {}), "rc": p.returncode}
        metrics = os.path.join(out_dir, f"w{i}", "metrics.json")
        if p.returncode == 0 and os.path.isfile(metrics):
            with open(metrics) as f:
                m = json.load(f)
            worker.update({k: m.get(k) for k in ("test_accuracy", "num_train", "num_workers", "replicas")})
        else:
            worker["output"] = output[-3000:]
        workers.append(worker)
    return {"seconds": round(seconds, 1), "workers": workers}


def measure(sizes, root: str, ports=free_ports, epochs: int = EPOCHS, size: int = SIZE) -> dict:
    """One two-worker run per folder size under `root`; the runs, each worker's growth per extra
    image (training peak, and whole-process peak) and the check on the training peak."""
    runs = []
    for n in sizes:
        folder = make_folder(n, os.path.join(root, f"images-{size}px-{n}"), size)
        recipe = write_recipe(folder, os.path.join(root, f"multiworker-{n}.toml"), epochs, size)
        runs.append({"folder_images": n, **run_workers(recipe, os.path.join(root, f"runs-{n}"), ports)})
        print(json.dumps(runs[-1]), flush=True)
    ok = all(w["rc"] == 0 and w.get("train_peak_mb") is not None for r in runs for w in r["workers"])
    small, big = runs[0], runs[-1]
    extra = big["folder_images"] - small["folder_images"]

    def growth(key):
        if not ok:
            return None
        return [round((b[key] - a[key]) * 1024 / extra, 2) for a, b in zip(small["workers"], big["workers"])]

    train_growth = growth("train_peak_mb")
    return {"runs": runs, "train_growth_kb_per_image": train_growth, "process_growth_kb_per_image": growth("peak_mb"),
            "limit_kb": GROWTH_LIMIT_KB,
            "meets_goal": ok and max(train_growth) < GROWTH_LIMIT_KB and max(growth("peak_mb")) < GROWTH_LIMIT_KB}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker(argv[1:])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks import harness
    from benchmarks.streaming import machine

    parser = argparse.ArgumentParser(prog="python -m benchmarks.multiworker_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[700, 2800], help="the two folder sizes")
    parser.add_argument("--out", default=HERE, help="folder for results-multiworker.json")
    args = parser.parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    harness.git_state()  # the commit the measurements start on
    summary = measure(sorted(args.sizes), os.path.join(OUT, "multiworker"))
    result = {"benchmark": "multi-worker peak memory, streamed image folder",
              "command": "python -m benchmarks.multiworker_memory", "machine": machine(),
              "image_size": [SIZE, SIZE], "epochs": EPOCHS, "workers": 2,
              "figures": "train_peak_mb: a worker's peak resident MB from its first training step to the end of "
                         "the run; peak_mb: the whole process's (building the model reads a bounded sample of "
                         "the training split first); growth: KB per extra image between the two folders",
              **summary,
              "seconds": round(time.perf_counter() - started, 1),
              # Other jobs on the machine change the timings: the 1-minute load average before and after.
              **harness.provenance(load_before)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results-multiworker.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    for run in result["runs"]:
        print(f"{run['folder_images']:,} images ({run['seconds']} s): " + ", ".join(
            f"worker {w['index']} peak {w.get('train_peak_mb')} MB training, {w.get('peak_mb')} MB in all"
            for w in run["workers"]))
    print(f"training peak growth per extra image: {result['train_growth_kb_per_image']} KB (limit "
          f"{GROWTH_LIMIT_KB} KB): {'met' if result['meets_goal'] else 'NOT met'}; whole process: "
          f"{result['process_growth_kb_per_image']} KB")
    return 0 if result["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
