"""Section `tuning`: the random search on `cnn-digits` the search page shows, and the replay of
its best trial, run as `kzoo tune` and `kzoo run` with the flags the page prints."""

from __future__ import annotations

import csv
import os
import time

from benchmarks import results

MAX_TRIALS = 8
MAX_EPOCHS = 10


def _metrics(out: str) -> dict:
    m = results.read_json(os.path.join(out, "metrics.json"))
    return {k: m[k] for k in ("best_val_accuracy", "test_accuracy")}


def measure() -> dict:
    started = time.perf_counter()
    work = os.path.join(results.WORK, "tuning")
    out, best = os.path.join(work, "tune-cnn-digits"), os.path.join(work, "best.toml")
    os.makedirs(work, exist_ok=True)
    args = ("tune", "cnn-digits", "--max-trials", MAX_TRIALS, "--max-epochs", MAX_EPOCHS, "--export", best)
    print(f"tuning: kzoo {' '.join(map(str, args))} ...", flush=True)
    proc, search_seconds = results.kzoo(*args, "--out", out, "--overwrite")
    lines = proc.stdout.splitlines()
    trial_lines = [line for line in lines if line.startswith("trial ")]
    start = next(i for i, line in enumerate(lines) if line.endswith(" by val_accuracy:"))
    ranking = [line for line in lines[start:] if line.strip() and not line.startswith("artifacts:")]
    with open(os.path.join(out, "trials.csv")) as f:
        trials = list(csv.DictReader(f))
    print("tuning: kzoo run best.toml; kzoo run cnn-digits --epochs 10 ...", flush=True)
    results.kzoo("run", best, "--out", os.path.join(work, "best"), "--overwrite", "--quiet")
    results.kzoo("run", "cnn-digits", "--epochs", MAX_EPOCHS, "--out", os.path.join(work, "untuned"),
                 "--overwrite", "--quiet")
    payload = {**results.header("tuning", time.perf_counter() - started),
               "command": results.command_line("tuning"), "search_command": "kzoo " + " ".join(map(str, args[:-1])) + " best.toml",
               "search_seconds": round(search_seconds, 1), "max_trials": MAX_TRIALS, "max_epochs": MAX_EPOCHS,
               "trial_lines": trial_lines, "ranking": ranking, "trials": trials,
               "best_replay": _metrics(os.path.join(work, "best")),
               "untuned": _metrics(os.path.join(work, "untuned"))}
    results.write("tuning", payload)
    return payload
