"""Section `dynamics`: the training-dynamics examples of the docs, each a `mlp-digits` run with
the `--set` overrides the docs print beside its figure, and the ill-conditioned quadratic that
compares per-weight adaptive gains with SGD and momentum."""

from __future__ import annotations

import math
import os
import time

from benchmarks import results
from kzoo.testing import steps_to_converge

# group -> [(label, overrides)]; every run is `kzoo run mlp-digits --set ...` with these overrides.
RUNS = {
    "adaptive": [
        ("tuned recipe (Adam 3e-3)", ["callbacks.divergence_guard={}"]),
        ("started 100x below, adaptive", ["optimizer.lr=3e-5", "callbacks.update_ratio={adaptive=true}"]),
        ("started 30x above, adaptive", ["optimizer.lr=0.09", "callbacks.update_ratio={adaptive=true}"]),
        ("SGD at 10, no batch norm, guarded", ["optimizer.name=sgd", "optimizer.lr=10", "model.normalization=none",
                                               "callbacks.divergence_guard={}", "callbacks.update_ratio={}"]),
    ],
    "momentum": [
        ("SGD 0.05, momentum 0.9 constant", ["optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"]),
        ("SGD 0.05, momentum warm-up 0.5 to 0.9 over 5 epochs",
         ["optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9",
          "callbacks.momentum_warmup={start=0.5, end=0.9, warmup_epochs=5.0}"]),
    ],
    "gains": [
        ("adaptive gains, lr 0.01, momentum 0.9", ["optimizer.name=gains", "optimizer.lr=0.01", "optimizer.momentum=0.9"]),
        ("SGD, lr 0.01, momentum 0.9", ["optimizer.name=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9"]),
        ("SGD, lr 0.03, momentum 0.9", ["optimizer.name=sgd", "optimizer.lr=0.03", "optimizer.momentum=0.9"]),
    ],
}
QUADRATIC_CURVATURES = (100.0, 10.0, 1.0, 0.1)
QUADRATIC_RATES = (0.01, 0.003)


def _run(overrides, out) -> dict:
    import keras

    from kzoo.recipes import load, run

    keras.backend.clear_session()
    result = run(load("mlp-digits", overrides), out=out, overwrite=True, verbose=0)
    m = result.metrics
    row = {k: m[k] for k in ("test_accuracy", "test_loss", "epochs_run") if k in m}
    if "stopped" in m:
        row["stopped"] = m["stopped"]
        row["diverged_epoch"] = (m.get("diverged_at") or {}).get("epoch")
    last = result.history[-1]
    if "lr_multiplier" in last:
        row["final_lr_multiplier"] = float(last["lr_multiplier"])
    if not math.isfinite(row.get("test_loss", 0.0)):
        row["test_loss"] = None
    return row


def measure() -> dict:
    import keras

    from kzoo.optimizers import AdaptiveGainSGD

    started = time.perf_counter()
    groups = {}
    for group, runs in RUNS.items():
        rows = []
        for i, (label, overrides) in enumerate(runs):
            print(f"dynamics: kzoo run mlp-digits {' '.join('--set ' + o for o in overrides)} ...", flush=True)
            row = _run(overrides, os.path.join(results.WORK, "dynamics", f"{group}-{i}"))
            rows.append({"label": label, "overrides": overrides, **row})
        groups[group] = rows
    quadratic = []
    for lr in QUADRATIC_RATES:
        quadratic.append({"lr": lr, "sgd_momentum_steps": steps_to_converge(keras.optimizers.SGD(lr, momentum=0.9), QUADRATIC_CURVATURES),
                          "gains_steps": steps_to_converge(AdaptiveGainSGD(lr, momentum=0.9), QUADRATIC_CURVATURES)})
    payload = {**results.header("dynamics", time.perf_counter() - started), "recipe": "mlp-digits",
               "runs": groups, "quadratic": {"curvatures": list(QUADRATIC_CURVATURES), "tolerance": 1e-4,
                                             "rows": quadratic}}
    results.write("dynamics", payload)
    return payload
