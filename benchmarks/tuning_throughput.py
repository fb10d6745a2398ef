"""Tuning throughput: trials per hour of a search on mlp-digits with 1 worker vs 2 workers.

Each search runs a chief and N workers of `kzoo tune` on 127.0.0.1 (KerasTuner's own
chief/worker engine). On a machine with fewer cores than workers the workers share them, so
this measures what distribution buys here, not on a cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import Result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_seconds(workers: int, trials: int, epochs: int) -> float:
    """Wall seconds from starting the chief until every process of the search has exited."""
    out = tempfile.mkdtemp(prefix=f"kzoo-tune-{workers}w-")
    port = _free_port()
    common = [sys.executable, "-m", "kzoo", "tune", "mlp-digits", "--tuner", "random", "--max-trials", str(trials),
              "--max-epochs", str(epochs), "--out", out, "--oracle", f"127.0.0.1:{port}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    procs = [subprocess.Popen(common + ["--role", "chief", "--poll-seconds", "0.5", "--wait-workers", "120"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs += [subprocess.Popen(common + ["--role", "worker", "--tuner-id", f"w{i}", "--connect-timeout", "120"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for i in range(workers)]
    try:
        for p in procs:
            p.wait(timeout=900)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a process of the {workers}-worker search failed: {[p.returncode for p in procs]}")
    return time.perf_counter() - start


def measure(trials: int = 6, epochs: int = 5) -> Result:
    one = search_seconds(1, trials, epochs)
    two = search_seconds(2, trials, epochs)
    return Result("tuning throughput, mlp-digits", f"trials/hour, 2 workers vs 1 ({trials} trials, {epochs} epochs)",
                  trials * 3600 / two, trials * 3600 / one, "trials/h",
                  note="baseline column: 1 worker; both searches include each process's start-up")
