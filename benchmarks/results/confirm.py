"""Section `confirm`: a pruned and confirmed search on `mlp-digits`, the table the search page
shows, run as the `kzoo tune` command the page prints."""

from __future__ import annotations

import csv
import os
import time

from benchmarks import results

ARGS = ("tune", "mlp-digits", "--max-trials", 6, "--max-epochs", 4, "--prune", "median", "--confirm", 2,
        "--confirm-seeds", 3)


def measure() -> dict:
    started = time.perf_counter()
    out = os.path.join(results.WORK, "confirm", "tune-mlp-digits")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    print(f"confirm: kzoo {' '.join(map(str, ARGS))} ...", flush=True)
    proc, search_seconds = results.kzoo(*ARGS, "--out", out, "--overwrite")
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if " trials (" in line and "pruned" in line)
    summary = [line for line in lines[start:] if line.strip() and not line.startswith("artifacts:")]
    with open(os.path.join(out, "trials.csv")) as f:
        trials = list(csv.DictReader(f))
    payload = {**results.header("confirm", time.perf_counter() - started),
               "command": results.command_line("confirm"), "search_command": "kzoo " + " ".join(map(str, ARGS)),
               "search_seconds": round(search_seconds, 1), "summary": summary, "trials": trials}
    results.write("confirm", payload)
    return payload
