"""Section `ensemble`: five seeds of `cnn-digits`, their ensemble, test-time augmentation and
Monte-Carlo dropout, measured with `kzoo run` and `kzoo eval` as the docs show them.

The seed-0 run is the same deterministic run as the `cnn-digits` row of the recipe table, and the
`export` section exports it.
"""

from __future__ import annotations

import os
import shutil
import time

from benchmarks import results

SEEDS = (0, 1, 2, 3, 4)
TTA = 8
MC_SAMPLES = 20
# The plots of seed 0's evaluation the evaluation page shows.
PLOTS = ("confusion.png", "reliability.png")


def run_dir(seed: int) -> str:
    return os.path.join(results.WORK, "ensemble", f"cnn-digits-s{seed}")


def train(seed: int) -> str:
    out = run_dir(seed)
    print(f"ensemble: kzoo run cnn-digits --seed {seed} ...", flush=True)
    results.kzoo("run", "cnn-digits", "--seed", seed, "--out", out, "--overwrite", "--quiet")
    return out


def measure() -> dict:
    started = time.perf_counter()
    runs = [train(seed) for seed in SEEDS]
    out = os.path.join(results.WORK, "ensemble", "ensemble")
    shutil.rmtree(out, ignore_errors=True)
    print(f"ensemble: kzoo eval {len(runs)} runs --tta {TTA} ...", flush=True)
    results.kzoo("eval", *runs, "--tta", TTA, "--out", out)
    ensemble = results.read_json(os.path.join(out, "ensemble.json"))
    print(f"ensemble: kzoo eval seed 0 --mc-dropout {MC_SAMPLES} ...", flush=True)
    results.kzoo("eval", runs[0], "--mc-dropout", MC_SAMPLES)
    single = results.read_json(os.path.join(runs[0], "eval.json"))
    for plot in PLOTS:
        shutil.copyfile(os.path.join(runs[0], plot), os.path.join(results.RESULTS, f"cnn-digits-s0-{plot}"))
    for member, seed in zip(ensemble["members"], SEEDS):
        member["run"] = f"s{seed}"
    payload = {**results.header("ensemble", time.perf_counter() - started), "tta": TTA,
               "mc_samples": MC_SAMPLES, "ensemble": ensemble,
               "seed0": {k: single[k] for k in ("test_accuracy", "test_loss", "ece", "macro_f1", "num_test")},
               "mc_dropout": single["mc_dropout"], "plots": [f"cnn-digits-s0-{p}" for p in PLOTS]}
    results.write("ensemble", payload)
    return payload
