"""Renders the generated blocks of README.md and docs/*.md from the results files.

A generated block sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->`; what is
between the markers is `BLOCKS[NAME](page)` and nothing else. Every block names the command that
wrote its figures and the file they are in, so a rerun of that command plus `--render` updates
the docs, and `tests/test_docs.py` fails while a block differs from its file.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil

from benchmarks import results
from benchmarks.harness import describe

ROOT = results.ROOT
BENCHMARKS = os.path.join(ROOT, "benchmarks")
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
# Files the docs show that a command writes outside docs/: copied in by render_all.
COPIES = {os.path.join(BENCHMARKS, "scaling.png"): os.path.join(results.RESULTS, "scaling.png")}


def pages() -> list[str]:
    """README.md and every Markdown page under docs/."""
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                               recursive=True))


# ---------------------------------------------------------------------------------------------
# Formatting


def _pct(x) -> str:
    return f"{x:.4f}"


def _secs(x) -> str:
    if x is None:
        return ""
    return f"{x:.1f} s" if x < 60 else f"{int(x // 60)} min {x % 60:02.0f} s"


def _count(n) -> str:
    return f"{n:,}"


def _load(data: dict) -> str:
    """`, load average 1.3` (or `1.3 before and 2.1 after`), or `""` when none is recorded."""
    load = data.get("load_average")
    if load is None:
        return ""
    return f", load average {load[0]} before and {load[1]} after" if isinstance(load, list) else f", load average {load}"


def provenance(data: dict, command: str | None = None, what: str = "Measured") -> str:
    """`Measured by `COMMAND` at commit abc1234 on MACHINE, load average L, DATE`: the line every
    rendered figure block carries (`benchmarks.harness.provenance` wrote its fields). `command`
    stands in for a file that does not record its own."""
    machine = data.get("machine") or "an unrecorded machine"
    if isinstance(machine, dict):  # the streaming and multi-worker files describe the machine in fields
        machine = f"{machine['cpu']} ({machine['cores']} cores)"
    return (f"{what} by `{data.get('command') or command}` {describe(data)} on {machine}{_load(data)}, "
            f"{data.get('date') or 'an unrecorded date'}")


def caption(data: dict, section: str, what: str = "Measured") -> str:
    return (f"*{provenance(data, what=what)} (figures in `docs/results/{section}.json`); the command took "
            f"{_secs(data['seconds'])}.*")


def _missing(section: str) -> str:
    return f"*Not measured yet: run `{results.command_line(section)}`.*"


def _table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Blocks


def recipes_table(page: str) -> str:
    data = results.read("recipes")
    if data is None:
        return _missing("recipes")
    rows = []
    for r in data["runs"]:
        name = f"`{r['recipe']}`"
        if r["overrides"]:
            name += f", {r.get('label', '')} (`{' '.join('--set ' + o for o in r['overrides'])}`)"
        if r["status"] != "ok":
            reason = r["reason"].removeprefix("kzoo: error: ").split(". ")[0]
            rows.append([name, r.get("description", ""), r.get("dataset", ""), "not run here: " + reason,
                         "", "", ""])
            continue
        accuracy = _pct(r["test_accuracy"])
        if "scratch_test_accuracy" in r:
            accuracy += f" (from scratch {_pct(r['scratch_test_accuracy'])})"
        rows.append([name, r.get("description", ""), r.get("dataset", ""), accuracy,
                     str(r.get("epochs_run", "")), _secs(r.get("train_seconds")), _secs(r["wall_seconds"])])
    out = _table(["recipe", "what", "data", "test accuracy", "epochs", "train time", "wall time (with start-up)"],
                 rows, "lllrrrr")
    repeat = data.get("repeat")
    if repeat:
        a, b = repeat["test_loss"]
        out += (f"\n\nTwo runs of `{repeat['recipe']}` with the same seed gave test losses {a!r} and {b!r}: "
                f"{'identical' if repeat['identical'] else 'NOT identical'}.")
    return out + _earlier_rows(data) + "\n\n" + caption(data, "recipes")


def _earlier_rows(data: dict) -> str:
    """A line naming the rows an earlier run of the command measured (`--recipes` reruns some
    rows and keeps the others), with their commits; `""` when every row is the file's."""
    earlier = {}
    for r in data["runs"]:
        if r["status"] == "ok" and (r.get("commit"), r.get("dirty")) != (data.get("commit"), data.get("dirty")):
            earlier.setdefault(describe(r), []).append(f"`{r['recipe']}`" + (f" ({r['label']})" if r.get("label") else ""))
    return "".join(f"\n\nMeasured {when}: {', '.join(names)}." for when, names in sorted(earlier.items()))


def transfer(page: str) -> str:
    data = results.read("recipes")
    row = next((r for r in (data or {}).get("runs", []) if r["recipe"] == "transfer-mnist-digits"
                and not r["overrides"] and r["status"] == "ok"), None)
    if row is None:
        return _missing("recipes")
    rows = [["pretraining on `mnist-5k` (`pretrain_test_accuracy`)", _pct(row["pretrain_test_accuracy"])],
            ["fine-tuned on 5 labels per class (`test_accuracy`)", _pct(row["test_accuracy"])],
            ["same CNN from scratch on the same 50 images (`scratch_test_accuracy`)",
             _pct(row["scratch_test_accuracy"])]]
    measured = "" if row.get("commit") == data.get("commit") else f" Measured {describe(row)}."
    return (_table(["seed " + str(row.get("seed", 0)), "test accuracy"], rows, "lr")
            + f"\n\nWall time {_secs(row['wall_seconds'])}.{measured} " + caption(data, "recipes"))


def splits(page: str) -> str:
    data = results.read("zoo")
    if data is None:
        return _missing("zoo")
    rows = [[f"`{name}`", _count(s["num_train"]), _count(s["num_val"]), _count(s["num_test"]),
             _count(s["num_train"] + s["num_val"] + s["num_test"])] for name, s in data["splits"].items()]
    return (_table(["dataset", "train", "validation", "test", "total"], rows, "lrrrr") + "\n\n"
            + caption(data, "zoo", "Counted"))


def param_counts(page: str) -> str:
    data = results.read("zoo")
    if data is None:
        return _missing("zoo")
    rows = [[f"`{c['model']}`", c["classes"], _count(c["trainable"]), f"{c['paper'] / 1e6:g}M",
             f"{c['relative_difference'] * 100:+.2f}%", c["source"]] for c in data["parameter_counts"]]
    r50 = data["resnet50"]
    same = "the same count" if r50["kzoo"] == r50["keras_applications"] else "a DIFFERENT count"
    shape = "x".join(map(str, data["input_shape"]))
    return (_table(["model", "classes", "trainable parameters", "paper", "difference", "paper's table"], rows,
                   "lrrrrl")
            + f"\n\nInputs {shape}. `resnet50` with {r50['classes']} classes has {_count(r50['kzoo'])} parameters, "
            f"`keras.applications.ResNet50` {_count(r50['keras_applications'])}: {same}.\n\n"
            + caption(data, "zoo", "Counted"))


def init_variance(page: str) -> str:
    data = results.read("zoo")
    if data is None:
        return _missing("zoo")
    v = data["init_variance"]
    rows = [[f"`{name}`", value if isinstance(value, str) else f"{value:.3g}"] for name, value in v["variance"].items()]
    return (_table(["model", "variance of the pooled features at initialization"], rows, "lr")
            + f"\n\nInput: {v['input']}. " + caption(data, "zoo", "Computed"))


def ensemble(page: str) -> str:
    data = results.read("ensemble")
    if data is None:
        return _missing("ensemble")
    e, tta = data["ensemble"], data["tta"]
    rows = [[m["run"], m["seed"], _pct(m["test_accuracy"]), _pct(m["test_loss"]), _pct(m["ece"]),
             _pct(m["tta_accuracy"])] for m in e["members"]]
    rows.append(["mean member", "", _pct(e["mean_member_accuracy"]), "", "", _pct(e["tta"]["mean_member_accuracy"])])
    ens = e["ensemble"]
    rows.append([f"**ensemble of {ens['size']} (mean probability)**", "", f"**{_pct(ens['test_accuracy'])}**",
                 f"**{_pct(ens['test_loss'])}**", _pct(ens["ece"]), _pct(e["tta"]["ensemble_accuracy"])])
    gain = ens["test_accuracy"] - e["mean_member_accuracy"]
    mc = data["mc_dropout"]
    right, wrong = mc.get("entropy_correct"), mc.get("entropy_wrong")
    entropy = (f"mean predictive entropy {right:.3f} on the right answers and "
               + (f"{wrong:.3f} on the wrong ones" if wrong is not None else "no wrong answer"))
    plots = "\n\n" + "\n".join(f"![{p.removesuffix('.png').replace('-', ' ')}](results/{p})" for p in data["plots"]) if page.startswith("docs") else ""
    return (_table(["run", "seed", "accuracy", "loss", "ECE", f"accuracy, TTA x{tta}"], rows, "lrrrrr")
            + f"\n\nEnsemble minus mean member: {gain * 100:+.2f} accuracy points on {e['num_test']} test images "
            f"(one image is {100 / e['num_test']:.2f} points). On s0, {data['mc_samples']} MC-dropout passes give "
            f"{entropy}." + plots + "\n\n" + caption(data, "ensemble"))


EXPORT_NAMES = {("savedmodel", "none"): "SavedModel", ("tflite", "none"): "TFLite float32",
                ("tflite", "float16"): "TFLite float16", ("tflite", "dynamic"): "TFLite dynamic range (int8 weights)",
                ("keras", "none"): ".keras (no optimizer)"}


def export(page: str) -> str:
    data = results.read("export")
    if data is None:
        return _missing("export")
    rows = [[EXPORT_NAMES.get((f["format"], f["quantize"]), f"{f['format']} {f['quantize']}"),
             f"{f['size_bytes'] / 1024:.0f} KiB", _pct(f["exported_accuracy"]), f"{f['max_abs_diff']:.1e}"]
            for f in data["formats"]]
    keras_acc = data["formats"][0]["keras_accuracy"]
    return (_table(["format", "size", f"test accuracy (Keras {_pct(keras_acc)})", "largest probability difference"],
                   rows, "lrrr")
            + f"\n\nModel: {data['run']}, {_count(data['parameters'])} parameters. " + caption(data, "export"))


def tuning(page: str) -> str:
    data = results.read("tuning")
    if data is None:
        return _missing("tuning")
    line = data["trial_lines"][min(1, len(data["trial_lines"]) - 1)]
    ranking = "\n".join(data["ranking"])
    scores = [float(t["val_accuracy"]) for t in data["trials"] if t.get("val_accuracy")]
    first = float(data["trials"][0]["val_accuracy"])
    best, untuned = data["best_replay"], data["untuned"]
    command = f"kzoo tune cnn-digits --max-trials {data['max_trials']} --max-epochs {data['max_epochs']} --export best.toml"
    return (f"`{command}` took {_secs(data['search_seconds'])}; one line per finished trial:\n\n"
            f"```\n{line}\n```\n\n```\n{ranking}\n```\n\n"
            f"Trial 1, the recipe as written, scored {_pct(first)} validation accuracy; the best of all "
            f"{len(scores)} scored {_pct(max(scores))}. `kzoo run best.toml` replays the best trial: "
            f"{_pct(best['best_val_accuracy'])} validation, {_pct(best['test_accuracy'])} test accuracy "
            f"(`kzoo run cnn-digits --epochs {data['max_epochs']}`: {_pct(untuned['best_val_accuracy'])} validation, "
            f"{_pct(untuned['test_accuracy'])} test).\n\n" + caption(data, "tuning"))


def confirm(page: str) -> str:
    data = results.read("confirm")
    if data is None:
        return _missing("confirm")
    trials = data["trials"]
    columns = ["trial", "status", "epochs", "confirms", "seed", "val_accuracy", "val_accuracy_mean", "val_accuracy_sd",
               "optimizer.lr", "model.depth", "model.width"]
    rows = [[t.get(c) or "-" for c in columns] for t in trials]
    for row in rows:
        for i, c in enumerate(columns):
            if c in ("val_accuracy", "val_accuracy_mean", "val_accuracy_sd", "optimizer.lr") and row[i] != "-":
                row[i] = f"{float(row[i]):.4g}"
    summary = "\n".join(data["summary"])
    return (f"`{data['search_command']}` took {_secs(data['search_seconds'])}; its summary:\n\n"
            f"```\n{summary}\n```\n\n`trials.csv` (some columns):\n\n" + _table(columns, rows) + "\n\n"
            + caption(data, "confirm"))


def _dynamics_rows(group: str, page: str):
    data = results.read("dynamics")
    if data is None:
        return None, _missing("dynamics")
    rows = []
    for r in data["runs"][group]:
        sets = " ".join(f"--set {o}" for o in r["overrides"])
        outcome = _pct(r["test_accuracy"])
        if r.get("stopped"):
            outcome = f"stopped: {r['stopped']} in epoch {r.get('diverged_epoch')}"
        extra = f"{r['final_lr_multiplier']:.3g}" if "final_lr_multiplier" in r else ""
        rows.append([r["label"], f"`{sets}`", outcome, r["epochs_run"], extra])
    return data, rows


def dynamics_block(group: str):
    def block(page: str) -> str:
        data, rows = _dynamics_rows(group, page)
        if data is None:
            return rows
        header = ["run", f"`kzoo run {data['recipe']}` with", "test accuracy", "epochs run"]
        if any(r[4] for r in rows):
            header.append("final rate multiplier")
        else:
            rows = [r[:4] for r in rows]
        return _table(header, rows, "llrrr"[:len(header)]) + "\n\n" + caption(data, "dynamics")
    return block


def quadratic(page: str) -> str:
    data = results.read("dynamics")
    if data is None:
        return _missing("dynamics")
    q = data["quadratic"]
    rows = [[r["lr"], r["gains_steps"], r["sgd_momentum_steps"]] for r in q["rows"]]
    curv = ", ".join(f"{c:g}" for c in q["curvatures"])
    return (_table(["global rate", "adaptive gains, momentum 0.9", "SGD, momentum 0.9"], rows, "rrr")
            + f"\n\nSteps to reduce 0.5 * sum(c_i w_i^2) (curvatures {curv}, from w = 1) below {q['tolerance']:g} "
            "of its start. " + caption(data, "dynamics", "Computed"))


def _benchmarks_json(name: str = "results.json") -> dict | None:
    """A results file `python -m benchmarks` (or `benchmarks.streaming`) wrote, or None."""
    try:
        with open(os.path.join(BENCHMARKS, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


# Why a benchmark can miss its goal; shown under the table only while it does.
GOAL_REASONS = {
    "train throughput resnet20": "kzoo's gains on a CPU are bfloat16 compute and fused batch norm, plus "
                                 "multi-step execution; the wall-time ratio moves between runs of the same code "
                                 "on this shared 2-core machine (see the CPU-time ratio in the note).",
    "train throughput cnn-digits": "kzoo's gains on a CPU are bfloat16 compute and fused batch norm, plus "
                                   "multi-step execution (the in-model RandomTranslation and XLA:CPU's slow "
                                   "convolutions keep the step off XLA); the wall-time ratio moves between runs "
                                   "of the same code on this shared 2-core machine (see the CPU-time ratio in "
                                   "the note).",
    "inference latency cnn-digits": "the model is small: per-call overhead dominates over the few batch-norm "
                                    "layers that folding removes.",
    "monitor overhead": "the monitors' own work (a probe forward pass, gradients on the probe batch, the "
                        "update norms inside the step) against a step this small; the wall-time ratio moves "
                        "between runs of the same code on this shared 2-core machine (see the CPU-time ratio).",
}


def goal_reason(row: dict) -> str:
    """Why a results row missed its goal: the bound its benchmark measured (a throughput row
    profiles kzoo's step below its goal), else the reason `GOAL_REASONS` records."""
    bound = (row.get("details") or {}).get("bound")
    if bound:
        return f"bound by {bound}."
    return next((v for k, v in GOAL_REASONS.items() if row["benchmark"].startswith(k)), "no explanation recorded yet.")


def benchmarks(page: str) -> str:
    try:
        with open(os.path.join(BENCHMARKS, "results.md")) as f:
            table = f.read().strip()
    except FileNotFoundError:
        return "*Not measured yet: run `python -m benchmarks`.*"
    data = _benchmarks_json() or {"results": []}
    missed = [r for r in data["results"] if r.get("meets_goal") is False]
    out = (f"*{provenance(data, 'python -m benchmarks')} (`benchmarks/results.json`, `benchmarks/results.md`, "
           f"`benchmarks/scaling.png`; `--quick` for a shorter run).*\n\n{table}")
    if page.startswith("docs"):
        out += "\n\n![throughput by batch size and depth](results/scaling.png)"
    if missed:
        out += "\n\nGoals not met in this run, and why:\n\n"
        for r in missed:
            out += f"- {r['benchmark']} (ratio {r['ratio']:.2f}, goal {r['goal']:g}): {goal_reason(r)}\n"
    return out.rstrip()


def performance_headline(page: str) -> str:
    data = _benchmarks_json()
    if data is None:
        return "*Not measured yet: run `python -m benchmarks`.*"
    rows = [r for r in data["results"] if r["benchmark"].startswith(("train throughput", "time to"))]
    parts = [f"{r['benchmark']} {r['ratio']:.2f}x" for r in rows]
    return (f"kzoo against the same model written in plain Keras (ratio above 1: kzoo is faster): "
            f"{'; '.join(parts)}. {provenance(data, 'python -m benchmarks')} (`benchmarks/results.json`).")


def streaming(page: str) -> str:
    data = _benchmarks_json("results-streaming.json")
    if data is None:
        return "*Not measured yet: run `python -m benchmarks.streaming`.*"
    from benchmarks.streaming import markdown

    out = markdown(data, title=False) + "\nFigures in `benchmarks/results-streaming.json`."
    if any(not c["meets_goal"] for c in data["summary"]["checks"] if "ratio" in c):
        out += "\n\nTime goals not met in this run, and why: " + STREAMING_REASON
    return out


# Why kzoo's pass over a folder can take longer than Keras's; shown only while a time goal is missed.
# No figure here: only what the results file holds is published (its table gives the times).
STREAMING_REASON = ("kzoo reads every file's header and end before splitting, so that a broken file is "
                    "skipped with one warning instead of failing an epoch later, where Keras lists the "
                    "names only; compare the CPU time column with the wall time to see how much of the "
                    "difference is work and how much is run-to-run variation on a shared machine.")


def streaming_headline(page: str) -> str:
    data = _benchmarks_json("results-streaming.json")
    if data is None:
        return "*Not measured yet: run `python -m benchmarks.streaming`.*"
    checks = [c for c in data["summary"]["checks"] if c.get("cache") == "auto"]  # the default
    growth = next(c for c in checks if "value_kb" in c)
    ratios = [c for c in checks if "ratio" in c]

    def ratio(c):
        cpu = f" (CPU time {c['cpu_ratio']:.2f}x)" if "cpu_ratio" in c else ""
        return f"{c['ratio']:.2f}x at {c['folder_images']:,} images{cpu}"

    ft = data.get("finetune")
    finetune = (f" `kzoo finetune --data FOLDER --image-size 224 224` on the {ft['folder_images']:,}-image folder "
                f"completed a head stage at a peak of {ft['peak_mb']:,.0f} MB." if ft and ft["rc"] == 0 else "")
    missed = " (goal: at most 1.00x; not met in this run)" if any(not c["meets_goal"] for c in ratios) else ""
    return (f"Reading a folder of 224x224 JPEGs, kzoo's streamed pipeline against "
            f"`keras.utils.image_dataset_from_directory` on the same folder (kzoo's time per image over "
            f"Keras's, below 1: kzoo is faster): {'; '.join(ratio(c) for c in ratios)}{missed}. "
            f"Peak memory grows by {growth['value_kb']} KB "
            f"per extra image.{finetune} {provenance(data)} (`benchmarks/results-streaming.md`).")


def levers(page: str) -> str:
    """The accuracy levers' table (`python -m benchmarks.levers` writes `docs/results/levers.json`)."""
    data = results.read("levers")
    if data is None:
        return "*Not measured yet: run `python -m benchmarks.levers`.*"
    from benchmarks.levers import markdown

    return markdown(data)


def recipe_fields(page: str) -> str:
    from benchmarks.results import reference

    return reference.render()


BLOCKS = {
    "recipes-table": recipes_table,
    "transfer": transfer,
    "splits": splits,
    "param-counts": param_counts,
    "init-variance": init_variance,
    "ensemble": ensemble,
    "export": export,
    "tuning": tuning,
    "confirm": confirm,
    "adaptive": dynamics_block("adaptive"),
    "momentum": dynamics_block("momentum"),
    "gains": dynamics_block("gains"),
    "quadratic": quadratic,
    "benchmarks": benchmarks,
    "performance-headline": performance_headline,
    "streaming": streaming,
    "streaming-headline": streaming_headline,
    "recipe-fields": recipe_fields,
    "levers": levers,
}


# ---------------------------------------------------------------------------------------------
# Rendering


def render_page(text: str, page: str) -> str:
    """`text` with every generated block replaced by what its results file renders to."""
    def replace(match):
        name = match.group("name")
        if name not in BLOCKS:
            raise KeyError(f"{page}: unknown generated block '{name}'. Known: {', '.join(BLOCKS)}")
        return f"{match.group(1)}{BLOCKS[name](page).rstrip()}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def stale_copies() -> list[str]:
    out = []
    for source, target in COPIES.items():
        if os.path.exists(source) and (not os.path.exists(target) or open(source, "rb").read() != open(target, "rb").read()):
            out.append(os.path.relpath(target, ROOT))
    return out


def render_all(write: bool = False) -> list[str]:
    """The pages (and copied files) that differ from what the results files render to; with
    `write`, brings them up to date."""
    changed = []
    for file in pages():
        page = os.path.relpath(file, ROOT)
        with open(file) as f:
            text = f.read()
        new = render_page(text, page)
        if new != text:
            changed.append(page)
            if write:
                with open(file, "w") as f:
                    f.write(new)
    for target in stale_copies():
        changed.append(target)
    if write:
        for source, target in COPIES.items():
            if os.path.exists(source):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(source, target)
    return changed
