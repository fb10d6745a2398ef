"""Figures for the documentation, each written to a results file by a command.

`python -m benchmarks.results [SECTION ...]` runs the named sections (all by default), writes
`docs/results/SECTION.json` for each, and then re-renders every generated block of README.md and
docs/*.md from those files. `python -m benchmarks.results --render` only re-renders;
`tests/test_docs.py` fails when a block differs from what its file renders to.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "docs", "results")
# Run folders the sections train into; the export section reuses the ensemble's seed-0 run.
WORK = os.path.join(ROOT, "runs", "results")


def command_line(section: str) -> str:
    return f"python -m benchmarks.results {section}"


def machine() -> str:
    """The machine and library versions, as one line for the table captions."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = ("GPU: " + ", ".join(g.name for g in gpus)) if gpus else "no GPU"
    from benchmarks.harness import cpu_name

    return (f"{os.cpu_count()} CPU cores ({cpu_name()}, {platform.machine()}), {device}, tensorflow {tf.__version__}, "
            f"keras {keras.__version__}, Python {platform.python_version()}")


def commit() -> str:
    """The commit the command started on (`benchmarks.harness.git_state`), or ''."""
    from benchmarks.harness import git_state

    return git_state()[0]


def header(section: str, seconds: float) -> dict:
    """The fields every results file starts with: the command, the machine, and the commit,
    CPU, load average and date of `benchmarks.harness.provenance`."""
    from benchmarks.harness import provenance

    return {"command": command_line(section), "machine": machine(), **provenance(), "seconds": round(seconds, 1)}


def path(section: str) -> str:
    return os.path.join(RESULTS, f"{section}.json")


def read(section: str) -> dict | None:
    try:
        with open(path(section)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write(section: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    target = path(section)
    with open(target + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(target + ".tmp", target)
    return target


def kzoo(*args, check: bool = True, timeout: float | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `python -m kzoo ARGS` as a user would; returns the finished process and its wall time."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kzoo", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"kzoo {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc, seconds


def read_json(file: str) -> dict:
    with open(file) as f:
        return json.load(f)
