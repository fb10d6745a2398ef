"""The recipe field reference, generated from the schema (kzoo.recipes.schema) and the registries.

Fixed sections come from the schema's dataclasses: every field with its type and default, and a
description from FIELD_HELP below. A field the schema gains without a description here makes
`render()` fail, and with it `tests/test_docs.py`, so the reference cannot fall behind the schema.
Model, schedule and callback arguments come from the registered builders' signatures.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

# Descriptions of the fixed fields, by dotted path.
FIELD_HELP = {
    "name": "The recipe's name: run folders are called `<name>-<timestamp>`.",
    "description": "One line shown by `kzoo list recipes`.",
    "seed": "Seed of weights, shuffling, augmentation and dropout; same seed, same machine: same `metrics.json`.",
    "epochs": "Epochs to train (with `[finetune]` stages: their total, set by the stages).",
    "deterministic": "TensorFlow's deterministic ops; `false` is faster and needed for `jit_compile`.",
    "steps_per_execution": "Training steps per call into the compiled graph; `0`: as many as divide an epoch's "
                           "steps (up to 32), 1 while a callback needs every step.",
    "jit_compile": "Compile the train step with XLA.",
    "strategy": "`default`, `auto` (TPU if one resolves, several GPUs: mirrored), `mirrored`, `tpu` or "
                "`multiworker` (the processes in `TF_CONFIG`; `kzoo run` only).",
    "mixed_precision": "`auto` (bfloat16 on TPU, on GPUs from compute capability 8.0, and for convolutional "
                       "models other than Fixup on a CPU with native bfloat16; float32 elsewhere), `off`, "
                       "`mixed_float16` or `mixed_bfloat16`.",
    "scale_batch_with_replicas": "Treat `data.batch_size` as per replica: the global batch is multiplied by the "
                                 "number of replicas.",
    "data.dataset": "`digits`, `mnist-5k`, a tensorflow-datasets name, a folder of class folders, or an `.npz` file.",
    "data.data_dir": "Where tensorflow-datasets keeps prepared data (`\"\"`: its default).",
    "data.batch_size": "Training batch size.",
    "data.eval_batch_size": "Batch size of evaluation and prediction; `0`: 4x the training batch.",
    "data.validation_split": "Fraction of all examples held out for validation.",
    "data.test_split": "Fraction of all examples held out for testing when the source has no test split.",
    "data.split_seed": "Seed of the stratified split (independent of `seed`, so runs with other seeds "
                       "share one split).",
    "data.image_size": "`[height, width]` to resize images to (folders and variable-size datasets); `[]`: "
                       "as they are (folders: 64x64).",
    "data.standardize": "`per_channel`, `zero_center`, `scale` or `none`; fitted on the training split "
                        "only and saved inside the model.",
    "data.pca_whiten": "PCA whitening of the flattened input, fitted on the training split (for MLPs).",
    "data.cache": "`auto` (unset: in memory when the decoded images fit a budget, else read each epoch), "
                  "`memory`, `disk` (decoded once, then read from disk) or `none`; `true` is `auto`, "
                  "`false` is `none`.",
    "data.shuffle_buffer": "Shuffle buffer size (seeded per epoch).",
    "data.augment.flip": "`none`, `horizontal`, `vertical` or `horizontal_and_vertical`.",
    "data.augment.translation": "Random shift, as a fraction of the image size.",
    "data.augment.rotation": "Random rotation, as a fraction of a full turn.",
    "data.augment.zoom": "Random zoom, as a fraction.",
    "data.augment.crop": "Pad-and-crop shift in pixels.",
    "data.augment.mixup": "MixUp's Beta alpha for training batches (soft labels); 0: off.",
    "data.augment.cutmix": "CutMix's Beta alpha for training batches (soft labels); 0: off. With MixUp: one of the two per batch.",
    "data.augment.policy": "`none`, `randaugment` or `augmix` (kzoo's training-only layers, drawn per image in the compiled step).",
    "data.augment.policy_magnitude": "The policy's strength on timm's 0-10 scale (rotation by up to 30 degrees at 10).",
    "data.augment.erasing": "Probability of erasing a random box of each training image.",
    "data.augment.color_jitter": "Brightness and contrast jitter strength in [0, 1].",
    "optimizer.name": "One of `kzoo list optimizers`.",
    "optimizer.lr": "Learning rate (the peak rate under a schedule).",
    "optimizer.momentum": "Momentum of `sgd`, `rmsprop` and `gains`.",
    "optimizer.nesterov": "Nesterov momentum (`sgd`).",
    "optimizer.weight_decay": "Decoupled weight decay (`adamw`, and Keras's `weight_decay` elsewhere).",
    "optimizer.beta_1": "Adam's first-moment decay.",
    "optimizer.beta_2": "Adam's second-moment decay.",
    "optimizer.epsilon": "Adam's, RMSprop's and Adagrad's epsilon.",
    "optimizer.rho": "RMSprop's decay.",
    "optimizer.clipnorm": "Clip each gradient to this norm; `0`: off.",
    "optimizer.clipvalue": "Clip each gradient element to this value; `0`: off.",
    "optimizer.gain_increase": "`gains`: added to a weight's gain while its gradient keeps its sign.",
    "optimizer.gain_decrease": "`gains`: factor on a weight's gain when its gradient changes sign.",
    "optimizer.min_gain": "`gains`: lower clip of the gains.",
    "optimizer.max_gain": "`gains`: upper clip of the gains.",
    "optimizer.ema": "Momentum of an exponential moving average of the weights (e.g. `0.999`); validation, test, "
                     "`model.keras` and exports use the average. `0`: off.",
    "optimizer.accumulate": "Apply the mean gradient of this many batches at once (one device only).",
    "loss.label_smoothing": "Mix each target with the uniform distribution by this much, in [0, 1).",
    "loss.class_weight": "`none`, `balanced` (`n / (classes * count)`) or a table of weights by class name "
                         "(`{cat = 2.0}`; classes left out weigh 1).",
    "checkpoint": "`last`: `model.keras` holds the last epoch's weights; `best`: the best `val_accuracy` epoch's "
                  "(`best_epoch` in `metrics.json`).",
    "metrics": "Logged every epoch (`val_` too) and tested (`test_<name>`): `accuracy` (always), `top3`, `top5`, "
               "`macro_f1`.",
    "finetune.stages": "The stage plan, e.g. `\"head:3@1e-3, top2:3@1e-4, all:4@1e-5..1e-4\"` (a string or a list).",
    "finetune.backbone": "`\"\"`: the recipe's `[model]`; or a zoo model, a `keras.applications` name, or a "
                         "`model.keras` path.",
    "finetune.weights": "`\"\"` (unset): `imagenet` for a `keras.applications` backbone (Keras's cache, else a "
                        "download), the preset's own for `hub:`, `none` otherwise; or `none`, `imagenet`, a weights file.",
    "finetune.layer_decay": "Layer-wise rate decay: the group k below the head learns `layer_decay**k` times the rate "
                            "(a ViT: per transformer block, as BEiT); `0` or `1`: off.",
    "finetune.train_bn": "Train batch normalization once its group is unfrozen (else it stays in inference mode).",
    "finetune.head_dropout": "Dropout before the new head.",
    "finetune.pixel_max": "Rescale target images so their largest pixel is this; `0`: as they are.",
    "finetune.resize": "`[height, width]` to resize target images to before padding.",
    "finetune.pad": "Zero padding in pixels around target images.",
    "finetune.labels_per_class": "Keep this many training labels per class; `0`: all.",
    "finetune.scratch_baseline": "Also train the same model from scratch on the same data (`scratch_test_accuracy`).",
    "finetune.pretrain.dataset": "Pretrain the `[model]` on this dataset first; `\"\"`: no pretraining.",
    "finetune.pretrain.epochs": "Pretraining epochs.",
    "finetune.pretrain.lr": "Pretraining learning rate.",
    "finetune.pretrain.batch_size": "Pretraining batch size; `0`: `data.batch_size`.",
}
# Tables a recipe holds whose keys come from a registry or another module, not the dataclasses.
COMPONENT_FIELDS = {"model", "schedule", "callbacks", "tune"}


def _toml(value) -> str:
    """A default as it would be written in a recipe (TOML literal, one line)."""
    if value is None or value is inspect.Parameter.empty:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _type(value) -> str:
    if value is None:
        return "string or boolean"  # a field whose unset default kzoo resolves (data.cache: auto)
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", tuple: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def fixed_fields() -> list[tuple[str, object]]:
    """(dotted path, default) of every fixed field of a recipe, in schema order."""
    from kzoo.recipes.schema import Recipe

    out = []

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            path = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, path + ".")
            elif not prefix and f.name in COMPONENT_FIELDS:
                continue
            else:
                out.append((path, value))

    walk(Recipe(), "")
    return out


def missing_help() -> list[str]:
    return [path for path, _ in fixed_fields() if path not in FIELD_HELP]


def _section_of(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[:-1]) or "top level"


def _arg_help(fn) -> dict:
    """`name: text` entries of a docstring's `Args:` section (`a, b: text` covers both)."""
    doc = inspect.getdoc(fn) or ""
    match = re.search(r"^Args:\n(.*?)(?:^\S|\Z)", doc, re.S | re.M)
    if not match:
        return {}
    entries, current = {}, None
    other = re.search(r"Other arguments as for `(\w+)`", doc)
    if other:
        entries = _Fallback(f"as for `{other.group(1)}`")
    for line in match.group(1).splitlines():
        m = re.match(r"^    ([a-z_0-9, ]+):\s*(.*)$", line)
        if m:
            current = [n.strip() for n in m.group(1).split(",")]
            for name in current:
                entries[name] = m.group(2).strip()
        elif current and line.startswith("        "):
            for name in current:
                entries[name] += " " + line.strip()
    return entries


class _Fallback(dict):
    """Argument help whose missing entries read `as for <model>`."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def get(self, key, default=None):
        return super().get(key, self.text)


def _cell(text: str) -> str:
    # The default column shows the default of each model; a docstring's "Defaults to" would repeat
    # it, or contradict it for a thin builder with defaults of its own.
    text = re.sub(r"\s*Defaults? to .*$", "", text)
    return text.replace("|", "\\|").replace("\n", " ")


def _registry_section(title: str, registry, defaults_of, intro: str) -> list[str]:
    lines = [f"## {title}", "", intro, ""]
    for name in registry.list():
        meta = registry.meta(name)
        defaults = defaults_of(name)
        helps = _arg_help(registry.get(name))
        lines += [f"### `{name}`", "", meta.get("description", ""), ""]
        if defaults and any(helps.get(k) for k in defaults):
            lines += ["| key | default | description |", "|---|---|---|"]
            lines += [f"| `{k}` | `{_cell(_toml(v))}` | {_cell(helps.get(k, ''))} |" for k, v in defaults.items()]
        elif defaults:
            lines += ["| key | default |", "|---|---|"]
            lines += [f"| `{k}` | `{_cell(_toml(v))}` |" for k, v in defaults.items()]
        else:
            lines.append("No arguments.")
        lines.append("")
    return lines


def _models_section() -> list[str]:
    from kzoo.zoo import MODELS, model_defaults

    lines = ["## `[model]`", "", "`name` is one of `kzoo list models`; every other key is an argument of that "
             "model's builder. Models that share a builder are listed together; the defaults shown are the "
             "first model's, and the models' own defaults follow the table.", ""]
    families: dict = {}
    for name in MODELS.list():
        builder = MODELS.meta(name).get("builder", MODELS.get(name))
        families.setdefault(builder, []).append(name)
    for builder, names in families.items():
        helps = _arg_help(builder)
        first = model_defaults(names[0])
        first.pop("seed", None)
        lines += [f"### {', '.join(f'`{n}`' for n in names)}", ""]
        lines += [f"- `{n}`: {MODELS.meta(n).get('description', '')}" for n in names]
        lines += ["", "| key | default | description |", "|---|---|---|"]
        lines += [f"| `{k}` | `{_cell(_toml(v))}` | {_cell(helps.get(k, ''))} |" for k, v in first.items()]
        lines.append("")
        for n in names[1:]:
            own = model_defaults(n)
            differ = {k: v for k, v in own.items() if k != "seed" and first.get(k) != v}
            if differ:
                lines.append(f"`{n}` differs: " + ", ".join(f"`{k} = {_cell(_toml(v))}`" for k, v in differ.items())
                             + "  ")
        lines.append("")
    return lines


def render() -> str:
    """The reference as Markdown; raises if a fixed field of the schema has no description."""
    from kzoo.callbacks.registry import CALLBACKS, callback_defaults
    from kzoo.callbacks.schedules import SCHEDULES, schedule_defaults
    from kzoo.optimizers import OPTIMIZER_DESCRIPTIONS

    missing = missing_help()
    if missing:
        raise KeyError(f"Recipe fields without a description in benchmarks/results/reference.py FIELD_HELP: "
                       f"{', '.join(missing)}")
    lines = ["*Generated from `kzoo.recipes.schema` and the registries by "
             "`python -m benchmarks.results --render`; `tests/test_docs.py` checks it is current.*", ""]
    sections: dict = {}
    for path, default in fixed_fields():
        sections.setdefault(_section_of(path), []).append((path, default))
    for where, entries in sections.items():
        title = "Top level" if where == "top level" else f"`[{where}]`"
        lines += ["", f"## {title}", "", "| key | type | default | description |", "|---|---|---|---|"]
        for path, default in entries:
            key = path.rsplit(".", 1)[-1]
            lines.append(f"| `{key}` | {_type(default)} | `{_cell(_toml(default))}` | {_cell(FIELD_HELP[path])} |")
    lines += ["", "## `[optimizer]` names", "", "| name | what |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in OPTIMIZER_DESCRIPTIONS.items()]
    lines += [""] + _models_section()
    lines += _registry_section("`[schedule]`", SCHEDULES, schedule_defaults,
                               "`name` is one of `kzoo list schedules`; times are in epochs (kzoo converts them "
                               "to steps). The other keys:")
    lines += _registry_section("`[callbacks.NAME]`", CALLBACKS, callback_defaults,
                               "Each table under `[callbacks]` switches on the callback it names "
                               "(`kzoo list callbacks`); its keys are that callback's arguments.")
    return "\n".join(lines).strip()
