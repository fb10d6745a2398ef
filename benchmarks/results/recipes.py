"""Section `recipes`: every shipped recipe run as `kzoo run NAME`, its test metrics and times.

Also runs `mlp-digits` a second time to check that one seed gives one result, and the BN twin of
`fixup-mnist5k` (`--set model.name=resnet20`) that its description names as the comparison.
"""

from __future__ import annotations

import os
import time

from benchmarks import results
from benchmarks.harness import git_state

# Extra runs published beside a recipe: (label, --set overrides).
VARIANTS = {"fixup-mnist5k": [("BN twin", ["model.name=resnet20"])]}
METRIC_KEYS = ("test_accuracy", "test_loss", "best_val_accuracy", "epochs_run", "train_seconds",
               "samples_per_second", "seed", "pretrain_test_accuracy", "scratch_test_accuracy")


def _run(name: str, out: str, overrides=()) -> dict:
    sets = [a for o in overrides for a in ("--set", o)]
    proc, wall = results.kzoo("run", name, *sets, "--out", out, "--overwrite", "--quiet", check=False)
    row = {"recipe": name, "overrides": list(overrides)}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {**row, "status": "not run", "reason": lines[-1] if lines else f"exit {proc.returncode}"}
    metrics = results.read_json(os.path.join(out, "metrics.json"))
    # Each row keeps its own commit: `--recipes NAME` reruns some rows and keeps the others'.
    commit, dirty = git_state()
    return {**row, "status": "ok", "wall_seconds": round(wall, 1), "commit": commit, "dirty": dirty,
            **{k: metrics[k] for k in METRIC_KEYS if k in metrics}}


def measure(names=None) -> dict:
    """Runs the named recipes (all shipped ones by default) and merges them into recipes.json."""
    from kzoo.recipes import list_recipes, load

    started = time.perf_counter()
    previous = results.read("recipes") or {}
    rows = {(r["recipe"], tuple(r["overrides"])): r for r in previous.get("runs", [])}
    for name in names or list_recipes():
        recipe = load(name)
        print(f"recipes: kzoo run {name} ...", flush=True)
        row = _run(name, os.path.join(results.WORK, "recipes", name))
        row.update(description=recipe.description, dataset=recipe.data.dataset, epochs=recipe.epochs)
        rows[(name, ())] = row
        print(f"  {row.get('test_accuracy', row.get('reason'))} ({row.get('wall_seconds', '-')} s)", flush=True)
        for label, overrides in VARIANTS.get(name, []):
            print(f"recipes: kzoo run {name} {' '.join('--set ' + o for o in overrides)} ...", flush=True)
            variant = _run(name, os.path.join(results.WORK, "recipes", f"{name}-{label.replace(' ', '-')}"),
                           overrides)
            rows[(name, tuple(overrides))] = {**variant, "label": label}
    repeat = previous.get("repeat")
    if names is None or "mlp-digits" in names:
        first = rows[("mlp-digits", ())]
        again = _run("mlp-digits", os.path.join(results.WORK, "recipes", "mlp-digits-again"))
        repeat = {"recipe": "mlp-digits", "test_loss": [first.get("test_loss"), again.get("test_loss")],
                  "identical": first.get("test_loss") == again.get("test_loss")}
    order = {name: i for i, name in enumerate(list_recipes())}
    ordered = sorted(rows.values(), key=lambda r: (order.get(r["recipe"], 99), len(r["overrides"])))
    payload = {**results.header("recipes", time.perf_counter() - started), "runs": ordered, "repeat": repeat}
    if names:
        payload["partial"] = sorted(names)
    results.write("recipes", payload)
    return payload
