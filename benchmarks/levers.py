"""`python -m benchmarks.levers [--quick] [--seeds 0 1 2] [--configs NAME ...] [--datasets NAME ...]`

Accuracy levers measured, not assumed: few-label training with and without label smoothing,
MixUp, CutMix, RandAugment and weight averaging (EMA), and all of them together, over seeds, on
two real datasets:

- `transfer-mnist-digits`: the shipped recipe (a CNN pretrained on `mnist-5k`, fine-tuned on 5
  labelled digits per class, head then all layers), with its plan and settings as shipped but
  no scratch baseline, and each seed's pretraining done once: every lever fine-tunes that
  seed's pretrained model (`[finetune] backbone = PATH`, which builds the same model the
  `[finetune.pretrain]` path builds).
- `cnn-photos` (`benchmarks/cnn-photos.toml`): the zoo CNN on a folder of 32x32 JPEG crops of
  scikit-learn's two sample photos, 4 classes, 12 labelled images per class
  (`benchmarks/photos.py`).

Every run is `kzoo.recipes.run` on the recipe with the lever's settings, then
`kzoo.evaluate.evaluate_run` (what `kzoo eval RUN` computes) on the saved model: test accuracy
and expected calibration error (15 bins). Per lever and dataset: mean and sample standard
deviation over the seeds, the difference to the baseline, and a verdict: a difference larger
than the larger of the two standard deviations "helps" or "hurts", a smaller one is "no help"
(within the seed-to-seed noise).

Writes `docs/results/levers.json` and renders the `levers` block of docs/fine-tuning.md (about
10 CPU-minutes). `--quick` (one seed, three levers, short plans: about 1-2 minutes on an idle
2-core machine) writes `runs/results/levers/levers-quick.json` and renders nothing: it checks the
command, it does not measure the levers; so does a subset of `--configs` or `--datasets`
(`levers-partial.json`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import sys
import time

from benchmarks import results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before kzoo brings TensorFlow in

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(results.WORK, "levers")
PHOTOS = os.path.join(HERE, "out", "photos-levers")
PHOTOS_RECIPE = os.path.join(HERE, "cnn-photos.toml")
PHOTOS_PER_CLASS = {"train_per_class": 12, "test_per_class": 100, "size": 32, "seed": 0}

# Weight averaging: Keras's average starts from the first step's weights with no bias
# correction, so it still holds m**steps of them at the end. These runs take about 200 steps
# (transfer: 50 head + 150 all; photos: 40 epochs of 5 batches): 0.999 would keep 82% of the
# starting weights, 0.99 13%, 0.98 under 2%, with a horizon (1 / (1 - m)) of the last 50 steps.
EMA = 0.98
# RandAugment: two operations per image at timm's level 5 of 10 (rand-m5-n2: turns up to 15
# degrees, shifts up to 22.5%); ImageNet's rand-m9 (27 degrees, 40%) is a lot for 28x28 digits
# and 32x32 crops.
MAGNITUDE = 5.0

CONFIGS = {
    "baseline": {},
    "label smoothing 0.1": {"loss.label_smoothing": 0.1},
    "MixUp 0.2": {"data.augment.mixup": 0.2},
    "CutMix 1.0": {"data.augment.cutmix": 1.0},
    f"RandAugment m{MAGNITUDE:g}": {"data.augment.policy": "randaugment", "data.augment.policy_magnitude": MAGNITUDE},
    f"EMA {EMA:g}": {"optimizer.ema": EMA},
    "all together": {"loss.label_smoothing": 0.1, "data.augment.mixup": 0.2, "data.augment.cutmix": 1.0,
                     "data.augment.policy": "randaugment", "data.augment.policy_magnitude": MAGNITUDE,
                     "optimizer.ema": EMA},
}
QUICK_CONFIGS = ("baseline", "label smoothing 0.1", f"EMA {EMA:g}")
DATASETS = ("transfer-mnist-digits", "cnn-photos")
# --quick: plans short enough to check the command end to end in a minute or two.
QUICK = {"transfer-mnist-digits": {"finetune.stages": ["head:2@1e-3", {"trainable": "all", "epochs": 3, "lr": 3e-4,
                                                                        "lr_factor": 0.5}],
                                   "finetune.pretrain.epochs": 1},
         "cnn-photos": {"epochs": 6}}


# What the benchmark changes in each dataset's recipe, besides the seed and the lever.
CHANGES = {"transfer-mnist-digits": "finetune.scratch_baseline=false, no [finetune.pretrain], "
                                    "finetune.backbone=the seed's pretrained.keras",
           "cnn-photos": "data.dataset=the photo folder (benchmarks/photos.py)"}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def settings(overrides: dict) -> str:
    """`loss.label_smoothing=0.1 optimizer.ema=0.98`: a lever as `--set` values."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "(the recipe as it is)"


# ---------------------------------------------------------------------------------------------
# Runs


def _free():
    import keras

    keras.backend.clear_session()
    gc.collect()


def pretrain(seed: int, quick: bool) -> tuple[str, float]:
    """Seed `seed`'s pretraining of transfer-mnist-digits, run once: the shipped recipe with a
    one-epoch head stage (the fine-tuning is not what this run is for) writes `pretrained.keras`,
    copied to where the levers' runs read it. Returns its path and its mnist-5k test accuracy."""
    import kzoo

    overrides = {"seed": seed, "finetune.scratch_baseline": False, "finetune.stages": ["head:1@1e-3"]}
    if quick:
        overrides["finetune.pretrain.epochs"] = QUICK["transfer-mnist-digits"]["finetune.pretrain.epochs"]
    out = os.path.join(WORK, "transfer-mnist-digits", f"pretrain-s{seed}")
    print(f"levers: transfer-mnist-digits seed {seed}: pretraining on mnist-5k ...", flush=True)
    result = kzoo.recipes.run(kzoo.recipes.load("transfer-mnist-digits", overrides), out=out, overwrite=True,
                              verbose=0)
    target = os.path.join(WORK, "transfer-mnist-digits", f"pretrained-s{seed}.keras")
    shutil.copyfile(os.path.join(out, "pretrained.keras"), target)
    _free()
    return target, result.metrics["pretrain_test_accuracy"]


def base_overrides(dataset: str, seed: int, quick: bool, backbone: str | None) -> dict:
    """The recipe settings every lever's run of `dataset` shares."""
    out = {"seed": seed}
    if dataset == "transfer-mnist-digits":
        out.update({"finetune.scratch_baseline": False, "finetune.pretrain": {}, "finetune.backbone": backbone})
        if quick:
            out["finetune.stages"] = QUICK[dataset]["finetune.stages"]
    else:
        out["data.dataset"] = PHOTOS
        if quick:
            out.update(QUICK[dataset])
    return out


def recipe_source(dataset: str) -> str:
    return PHOTOS_RECIPE if dataset == "cnn-photos" else dataset


def run_one(dataset: str, config: str, seed: int, shared: dict) -> dict:
    """One training run and its evaluation; returns its row of the results file."""
    import kzoo
    import kzoo.evaluate

    recipe = kzoo.recipes.load(recipe_source(dataset), {**shared, **CONFIGS[config]})
    out = os.path.join(WORK, dataset, f"{slug(config)}-s{seed}")
    started = time.perf_counter()
    result = kzoo.recipes.run(recipe, out=out, overwrite=True, verbose=0)
    report = kzoo.evaluate.evaluate_run(out, write=False)  # what `kzoo eval RUN` computes
    seconds = time.perf_counter() - started
    m = result.metrics
    row = {"dataset": dataset, "config": config, "seed": seed, "test_accuracy": report["test_accuracy"],
           "ece": report["ece"], "test_loss": report["test_loss"], "macro_f1": report["macro_f1"],
           "run_test_accuracy": m["test_accuracy"], "epochs_run": m["epochs_run"], "num_train": m["num_train"],
           "num_val": m["num_val"], "num_test": m["num_test"], "train_seconds": m["train_seconds"],
           "seconds": round(seconds, 1)}
    if "stages" in m:
        row["stages"] = m["stages"]
    print(f"levers: {dataset} {config} seed {seed}: test accuracy {row['test_accuracy']:.4f}, "
          f"ECE {row['ece']:.4f} ({seconds:.0f} s)", flush=True)
    _free()
    return row


# ---------------------------------------------------------------------------------------------
# Summary


def spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def verdict(diff: float, sd: float | None, sd_base: float | None, higher_is_better: bool = True) -> str:
    """`helps` / `hurts` when |diff| exceeds the larger seed-to-seed standard deviation, else
    `no help`; `one seed` when there is no spread to compare with."""
    if sd is None or sd_base is None:
        return "one seed"
    if abs(diff) <= max(sd, sd_base):
        return "no help"
    return "helps" if (diff > 0) == higher_is_better else "hurts"


def summarize(rows: list[dict], configs, datasets) -> dict:
    """Per dataset, one row per lever: mean and sd of accuracy and ECE, the differences to the
    baseline and the verdicts (higher accuracy and lower ECE are better)."""
    out = {}
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        stats = {}
        for config in configs:
            got = [r for r in mine if r["config"] == config]
            if got:
                stats[config] = {"seeds": [r["seed"] for r in got],
                                 "accuracy": spread([r["test_accuracy"] for r in got]),
                                 "ece": spread([r["ece"] for r in got])}
        base = stats.get("baseline")
        table = []
        for config, s in stats.items():
            (acc, acc_sd), (ece, ece_sd) = s["accuracy"], s["ece"]
            entry = {"config": config, "settings": settings(CONFIGS[config]), "seeds": s["seeds"],
                     "accuracy_mean": round(acc, 6), "accuracy_sd": _round(acc_sd),
                     "ece_mean": round(ece, 6), "ece_sd": _round(ece_sd)}
            if base is not None and config != "baseline":
                (b_acc, b_acc_sd), (b_ece, b_ece_sd) = base["accuracy"], base["ece"]
                entry.update({"accuracy_diff": round(acc - b_acc, 6),
                              "accuracy_verdict": verdict(acc - b_acc, acc_sd, b_acc_sd),
                              "ece_diff": round(ece - b_ece, 6),
                              "ece_verdict": verdict(ece - b_ece, ece_sd, b_ece_sd, higher_is_better=False)})
            table.append(entry)
        out[dataset] = table
    return out


def _round(x):
    return None if x is None else round(x, 6)


# ---------------------------------------------------------------------------------------------
# Command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, three levers, short plans; writes runs/results/levers/levers-quick.json")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds. Defaults to 0 1 2 (--quick: 0)")
    parser.add_argument("--configs", nargs="+", metavar="NAME", help=f"levers, from: {', '.join(CONFIGS)}")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, help="datasets. Defaults to both")
    parser.add_argument("--no-render", action="store_true", help="write the results file only")
    args = parser.parse_args(argv)
    configs = args.configs or (QUICK_CONFIGS if args.quick else tuple(CONFIGS))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown lever {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    if "baseline" not in configs:
        configs = ("baseline", *configs)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    datasets = args.datasets or DATASETS

    from benchmarks.harness import git_state, provenance
    from benchmarks.photos import make_photo_folder

    git_state()  # the commit the measurements start on
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    os.makedirs(WORK, exist_ok=True)
    rows, pretraining = [], {}
    for dataset in datasets:
        if dataset == "cnn-photos":
            make_photo_folder(PHOTOS, **PHOTOS_PER_CLASS)
        for seed in seeds:
            backbone = None
            if dataset == "transfer-mnist-digits":
                backbone, pretraining[seed] = pretrain(seed, args.quick)
            shared = base_overrides(dataset, seed, args.quick, backbone)
            for config in configs:
                rows.append(run_one(dataset, config, seed, shared))
    seconds = time.perf_counter() - started

    command = "python -m benchmarks.levers" + (" " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip()
    described = {}
    for dataset in datasets:
        first = next(r for r in rows if r["dataset"] == dataset)
        described[dataset] = {
            "recipe": "transfer-mnist-digits" if dataset != "cnn-photos" else os.path.relpath(PHOTOS_RECIPE, results.ROOT),
            "changes": CHANGES[dataset],
            "epochs": first["epochs_run"], "stages": first.get("stages"),
            "num_train": first["num_train"], "num_val": first["num_val"], "num_test": first["num_test"]}
    described.get("cnn-photos", {})["folder"] = dict(PHOTOS_PER_CLASS)
    if pretraining:
        described["transfer-mnist-digits"]["pretrain_test_accuracy"] = {str(s): a for s, a in pretraining.items()}
    # The load average before and after: other jobs on the machine slow the runs, not the figures.
    payload = {**results.header("levers", seconds), **provenance(load_before), "command": command,
               "quick": args.quick, "seeds": seeds,
               "ema": EMA, "policy_magnitude": MAGNITUDE,
               "configs": {c: CONFIGS[c] for c in configs}, "datasets": described,
               "rule": "helps / hurts: |difference to baseline| > the larger of the two seed standard deviations; "
                       "no help: within it",
               "summary": summarize(rows, configs, datasets), "runs": rows}
    # Only the whole table is published: a quick run or a subset of levers or datasets goes to runs/.
    published = not args.quick and set(configs) == set(CONFIGS) and set(datasets) == set(DATASETS)
    if published:
        target = results.write("levers", payload)
    else:
        target = os.path.join(WORK, f"levers-{'quick' if args.quick else 'partial'}.json")
        with open(target, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
    print(f"levers: wrote {os.path.relpath(target, results.ROOT)} in {seconds:.0f} s", flush=True)
    print(summary_text(payload))
    if published and not args.no_render:
        changed = render_levers_block()
        print(f"rendered: {', '.join(changed) if changed else 'the levers block was current'}")
    return 0


def summary_text(payload: dict) -> str:
    lines = []
    for dataset, table in payload["summary"].items():
        lines.append(dataset)
        for e in table:
            sd = "" if e["accuracy_sd"] is None else f" +- {e['accuracy_sd']:.4f}"
            diff = f"  {e['accuracy_diff']:+.4f} {e['accuracy_verdict']}" if "accuracy_diff" in e else ""
            lines.append(f"  {e['config']:<24} accuracy {e['accuracy_mean']:.4f}{sd}{diff}  ECE {e['ece_mean']:.4f}")
    return "\n".join(lines)


def _mean_sd(mean: float, sd: float | None) -> str:
    return f"{mean:.4f}" + ("" if sd is None else f" ± {sd:.4f}")


def markdown(data: dict) -> str:
    """The docs' levers block from a results file: one table per dataset, the rule, the caption."""
    from benchmarks.results.render import _table, caption

    seeds = ", ".join(map(str, data["seeds"]))
    out = []
    for dataset, table in data["summary"].items():
        d = data["datasets"][dataset]
        plan = f"stages {', '.join(d['stages'])}" if d.get("stages") else f"{d['epochs']} epochs"
        pre = d.get("pretrain_test_accuracy")
        pre = (f"; mnist-5k pretraining test accuracy {', '.join(f'{a:.4f}' for a in pre.values())} (seeds {seeds})"
               if pre else "")
        out.append(f"**{dataset}** (`{d['recipe']}` with {d['changes']}; {plan}; {d['num_train']} training, "
                   f"{d['num_val']} validation and {d['num_test']} test images{pre}):")
        rows = []
        for e in table:
            name = e["config"]
            if e["config"] == "all together":
                name += " (every setting above)"
            elif e["config"] != "baseline":
                name += f" (`{e['settings']}`)"
            diff = lambda key: f"{e[key]:+.4f}" if key in e else ""  # noqa: E731
            rows.append([name, _mean_sd(e["accuracy_mean"], e["accuracy_sd"]), diff("accuracy_diff"),
                         e.get("accuracy_verdict", ""), _mean_sd(e["ece_mean"], e["ece_sd"]), diff("ece_diff"),
                         e.get("ece_verdict", "")])
        out.append(_table(["lever", "test accuracy", "vs baseline", "accuracy verdict", "ECE", "vs baseline",
                           "calibration verdict"], rows, "lrrlrrl"))
        verdicts = {}
        for e in table:
            if "accuracy_verdict" in e:
                verdicts.setdefault(e["accuracy_verdict"], []).append(e["config"])
        out.append(f"Test accuracy on {dataset}: " + "; ".join(
            f"{word}: {', '.join(verdicts[word]) if verdicts.get(word) else 'none'}"
            for word in ("helps", "no help", "hurts", "one seed") if word != "one seed" or verdicts.get(word)) + ".")
    out.append(f"Mean ± sample standard deviation over seeds {seeds}, each seed one `kzoo run` and the "
               f"`kzoo eval` of its saved model (ECE over 15 confidence bins; lower is better). Verdict: "
               f"{data['rule']}. EMA {data['ema']:g}: these runs take about 200 steps and Keras's average starts "
               f"at the first step's weights, so 0.999 would end holding most of the initial weights; "
               f"RandAugment at magnitude {data['policy_magnitude']:g} of 10, two operations per image (timm's "
               f"ImageNet rand-m9 is a lot for 28x28 digits and 32x32 crops).")
    out.append(caption(data, "levers"))
    return "\n\n".join(out)


def render_levers_block() -> list[str]:
    """Renders the `levers` blocks only: the other blocks follow their own commands' files."""
    from benchmarks.results import render

    changed = []
    for file in render.pages():
        page = os.path.relpath(file, results.ROOT)

        def replace(match):
            if match.group("name") != "levers":
                return match.group(0)
            return f"{match.group(1)}{render.BLOCKS['levers'](page).rstrip()}\n{match.group(4)}"

        with open(file) as f:
            text = f.read()
        new = render.BLOCK.sub(replace, text)
        if new != text:
            with open(file, "w") as f:
                f.write(new)
            changed.append(page)
    return changed


if __name__ == "__main__":
    sys.exit(main())
