"""Same numbers twice: each shipped recipe, with its defaults, run twice by `kzoo run` in two
processes; history.csv and metrics.json must match apart from timings.

Epochs are cut short (the check is about determinism, not accuracy); resnet20-cifar10 trains on
a synthetic 32x32 `.npz` (CIFAR-10 needs a download), and transfer-mnist-digits runs one epoch
per stage and one pretraining epoch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

from kzoo.testing import run_without_timings

# Recipe -> extra `--set` overrides beyond the shortened epochs.
SHORTEN = {
    "transfer-mnist-digits": ['finetune.stages=["head:1@1e-3", "all:1@3e-4"]', "finetune.pretrain.epochs=1"],
}


def synthetic_npz(path: str, n: int = 512, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, n)
    np.savez(path, x_train=x, y_train=y, x_test=x[: n // 4], y_test=y[: n // 4])
    return path


def check(name: str, epochs: int = 2, workdir: str | None = None, timeout: float = 900) -> dict:
    """Runs `name` twice; whether history and metrics (without timings) are identical."""
    workdir = workdir or tempfile.mkdtemp(prefix=f"kzoo-repro-{name}-")
    sets = list(SHORTEN.get(name, []))
    if name not in SHORTEN:
        sets.append(f"epochs={epochs}")
    if name == "resnet20-cifar10":
        sets.append(f"data.dataset={synthetic_npz(os.path.join(workdir, 'synthetic32.npz'))}")
    outs = []
    for run in ("a", "b"):
        out = os.path.join(workdir, run)
        cmd = [sys.executable, "-m", "kzoo", "run", name, "--out", out, "--quiet"]
        for s in sets:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            return {"recipe": name, "identical": None, "error": tail[-1] if tail else f"exit {proc.returncode}"}
        outs.append(run_without_timings(out))
    (rows_a, metrics_a), (rows_b, metrics_b) = outs
    differing = sorted(k for k in set(metrics_a) | set(metrics_b) if metrics_a.get(k) != metrics_b.get(k))
    return {"recipe": name, "identical": rows_a == rows_b and not differing, "history_identical": rows_a == rows_b,
            "metrics_differing": differing, "epochs": len(rows_a), "overrides": sets}


def check_all(epochs: int = 2) -> list[dict]:
    import kzoo

    results = []
    for name in kzoo.recipes.list_recipes():
        result = check(name, epochs)
        results.append(result)
        state = {True: "identical", False: "DIFFERENT", None: "failed: " + result.get("error", "")}[result["identical"]]
        print(f"reproducibility {name}: {state}", flush=True)
    return results


def markdown(results: list[dict]) -> str:
    lines = ["Two `kzoo run`s of each shipped recipe with its defaults, in two processes (timings left out):", "",
             "| recipe | history.csv | metrics.json | overrides |", "|---|---|---|---|"]
    for r in results:
        if r["identical"] is None:
            lines.append(f"| {r['recipe']} | failed | {r['error']} | |")
            continue
        metrics = "identical" if not r["metrics_differing"] else "differs: " + ", ".join(r["metrics_differing"])
        lines.append(f"| {r['recipe']} | {'identical' if r['history_identical'] else 'DIFFERENT'} | {metrics} | "
                     f"{'; '.join(r['overrides'])} |")
    return "\n".join(lines) + "\n"
