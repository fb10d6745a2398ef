"""The typed recipe schema: fixed sections as dataclasses, component sections (model, schedule,
callbacks) checked against the signature of the registered builder they name.

A recipe is data: TOML parsed into these types, never evaluated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

import keras
import tomli_w

from kzoo.callbacks.registry import CALLBACKS, callback_defaults
from kzoo.callbacks.schedules import SCHEDULES, schedule_defaults
from kzoo.data.preprocessing import FLIPS, POLICIES, STANDARDIZE
from kzoo.errors import RecipeError, UserError, closest
from kzoo.finetune.plan import parse_stages
from kzoo.optimizers import OPTIMIZERS, validate_gain_config
from kzoo.train.distribution import validate_strategy_fields
from kzoo.train.losses import validate_class_weight
from kzoo.train.metrics import validate_metric_names
from kzoo.zoo import MODELS, activations, initializers, model_defaults, norms
from kzoo.zoo.backbones import resolve_weights

# Component arguments that may be a name or a `{name = ..., ...}` table.
SPEC_KEYS = ("activation", "initializer", "normalization")


@dataclass
class AugmentConfig:
    flip: str = "none"
    translation: float = 0.0
    rotation: float = 0.0
    zoom: float = 0.0
    crop: int = 0
    # Training batches mixed in the data pipeline, with soft labels (kzoo.data.mixing): Beta alphas, 0: off.
    mixup: float = 0.0
    cutmix: float = 0.0
    # Training-only layers in the model (kzoo.data.preprocessing.augmentation_layers).
    policy: str = "none"  # none | randaugment | augmix
    policy_magnitude: float = 5.0  # timm's 0-10 scale (rotation up to 30 degrees at 10)
    erasing: float = 0.0  # probability of erasing a random box of an image
    color_jitter: float = 0.0  # brightness and contrast strength in [0, 1]


@dataclass
class DataConfig:
    dataset: str = "digits"
    data_dir: str = ""
    batch_size: int = 64
    eval_batch_size: int = 0
    validation_split: float = 0.1
    test_split: float = 0.2
    split_seed: int = 0
    image_size: list = field(default_factory=list)
    standardize: str = "per_channel"
    pca_whiten: bool = False
    cache: object = None  # "auto" (None) | "memory" | "disk" | "none" (kzoo.data.streaming); true/false too
    shuffle_buffer: int = 10000
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if not (self.cache is None or isinstance(self.cache, bool) or self.cache in ("auto", "memory", "disk", "none")):
            raise RecipeError(f"data.cache must be auto, memory, disk or none (or true/false). Received: cache={self.cache!r}")


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    rho: float = 0.9
    clipnorm: float = 0.0
    clipvalue: float = 0.0
    # Per-weight adaptive gains (name = "gains"): see kzoo.optimizers.gains.AdaptiveGainSGD.
    gain_increase: float = 0.05
    gain_decrease: float = 0.95
    min_gain: float = 0.01
    max_gain: float = 10.0
    # Polyak averaging of the weights (Keras's `use_ema`): validation, test and the saved model
    # use the average; 0: off.
    ema: float = 0.0
    # Apply the mean gradient of this many batches at once (Keras's `gradient_accumulation_steps`).
    accumulate: int = 1


@dataclass
class LossConfig:
    """[loss]: the cross-entropy every path trains (kzoo.train.losses.ClassificationLoss)."""

    label_smoothing: float = 0.0
    # "none", "balanced" or a table of weights by class name ({cat = 2.0}): checked by
    # kzoo.train.losses.validate_class_weight, not by its default's type.
    class_weight: object = "none"


CHECKPOINTS = ("last", "best")


def build_loss_section(raw) -> LossConfig:
    """Validates [loss]; `class_weight` may be a name or a table, which the type check cannot say."""
    if not isinstance(raw, dict):
        raise RecipeError(f"[loss] must be a table. Received: loss={raw!r}")
    raw = dict(raw)
    class_weight = validate_class_weight(raw.pop("class_weight", "none"))
    cfg = build_section(LossConfig, raw, "loss")
    cfg.class_weight = class_weight
    return cfg


def validate_training_levers(recipe):
    """Ranges of [loss], optimizer.ema / accumulate, checkpoint and metrics, and what they need."""
    def fail(key, value, what):
        raise RecipeError(f"{key} must be {what}. Received: {key.rsplit('.', 1)[-1]}={value}")

    if not 0 <= recipe.loss.label_smoothing < 1:
        fail("loss.label_smoothing", recipe.loss.label_smoothing, "in [0, 1)")
    if not 0 <= recipe.optimizer.ema < 1:
        fail("optimizer.ema", recipe.optimizer.ema, "in [0, 1) (0: off)")
    if recipe.optimizer.accumulate < 1:
        fail("optimizer.accumulate", recipe.optimizer.accumulate, "at least 1")
    if recipe.checkpoint not in CHECKPOINTS:
        raise RecipeError(f"checkpoint must be last or best. Received: checkpoint={recipe.checkpoint!r}")
    recipe.metrics = validate_metric_names(recipe.metrics)
    if recipe.checkpoint == "best" and recipe.data.validation_split == 0:
        raise RecipeError("checkpoint = \"best\" keeps the epoch with the best val_accuracy and needs a "
                          "validation split. Received: data.validation_split=0")
    if recipe.optimizer.ema and recipe.callbacks.get("early_stopping", {}).get("restore_best_weights"):
        raise RecipeError("callbacks.early_stopping.restore_best_weights keeps raw weights, while optimizer.ema "
                          "validates and saves the averages: use checkpoint = \"best\" instead. "
                          "Received: restore_best_weights=true")
    if recipe.optimizer.accumulate > 1 and recipe.strategy in ("mirrored", "tpu", "multiworker"):
        # Keras's accumulation branches with a cond that tf.distribute cannot merge inside.
        raise RecipeError("optimizer.accumulate > 1 runs on one device only (Keras's gradient accumulation fails "
                          "under tf.distribute); raise data.batch_size over the replicas instead. "
                          f"Received: strategy={recipe.strategy}, accumulate={recipe.optimizer.accumulate}")


def _optimizer_names() -> tuple:
    return tuple(OPTIMIZERS.list())


# --- [finetune]: staged fine-tuning (kzoo.finetune) -------------------------------------------
@dataclass
class PretrainConfig:
    """[finetune.pretrain]: train the recipe's [model] on another dataset first."""

    dataset: str = ""
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 0  # 0: data.batch_size


@dataclass
class FinetuneConfig:
    """[finetune]: a stage plan and the backbone it fine-tunes (see kzoo.finetune)."""

    stages: list = field(default_factory=list)
    backbone: str = ""  # "": the [model]; a zoo model; a keras.applications name; a model.keras path
    # "": imagenet for a keras.applications backbone, the preset's own for hub:, none otherwise;
    # or none | imagenet | a weights file (kzoo.zoo.backbones.resolve_weights).
    weights: str = ""
    # Layer-wise rate decay: the group k below the head learns layer_decay**k times (0 or 1: off).
    layer_decay: float = 0.0
    train_bn: bool = False
    head_dropout: float = 0.0
    pixel_max: float = 0.0  # rescale target images so their largest pixel is this (0: as they are)
    resize: list = field(default_factory=list)  # [H, W] before padding
    pad: int = 0
    labels_per_class: int = 0  # keep this many training labels per class (0: all)
    scratch_baseline: bool = False
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


def build_finetune(raw, recipe, explicit_epochs: bool = False) -> FinetuneConfig:
    """Validates [finetune]; a stage plan may be one string ("head:3@1e-3, all:4@1e-5")."""
    raw = dict(raw or {})
    if isinstance(raw.get("stages"), str):
        raw["stages"] = [s.strip() for s in raw["stages"].split(",") if s.strip()]
    cfg = build_section(FinetuneConfig, raw, "finetune")
    if cfg.stages:
        total = sum(s.epochs for s in parse_stages(cfg.stages))
        if explicit_epochs and recipe.epochs != total:
            raise RecipeError(f"With [finetune] stages, epochs is their total ({total}); change the stages instead. Received: epochs={recipe.epochs}")
        recipe.epochs = total
    checks = [("labels_per_class", cfg.labels_per_class >= 0), ("pad", cfg.pad >= 0), ("pixel_max", cfg.pixel_max >= 0),
              ("head_dropout", 0 <= cfg.head_dropout < 1), ("pretrain.epochs", cfg.pretrain.epochs >= 1),
              ("pretrain.lr", cfg.pretrain.lr > 0), ("pretrain.batch_size", cfg.pretrain.batch_size >= 0)]
    for key, ok in checks:
        if not ok:
            value = getattr(cfg.pretrain, key[9:]) if key.startswith("pretrain.") else getattr(cfg, key)
            raise RecipeError(f"finetune.{key} is out of range. Received: {key.rsplit('.', 1)[-1]}={value}")
    if len(cfg.resize) not in (0, 2):
        raise RecipeError(f"finetune.resize must be [height, width]. Received: resize={cfg.resize}")
    if not cfg.stages:  # without a plan nothing reads the other [finetune] fields: refuse, don't ignore
        given = sorted(k for k in raw if k != "stages")
        if given:
            raise RecipeError(f"finetune.{given[0]} needs finetune.stages (e.g. stages = \"head:2@1e-3, all:3@1e-4\"). "
                              f"Received: {given[0]}={raw[given[0]]!r}")
    if not 0 <= cfg.layer_decay <= 1:
        raise RecipeError(f"finetune.layer_decay must be in [0, 1] (0 or 1: off). Received: layer_decay={cfg.layer_decay}")
    try:
        resolve_weights(cfg.backbone, cfg.weights)
    except UserError as e:
        raise RecipeError(str(e)) from None
    return cfg
# --- end [finetune] ------------------------------------------------------------------------------


@dataclass
class Recipe:
    """A validated, fully resolved recipe."""

    name: str = "recipe"
    description: str = ""
    seed: int = 0
    epochs: int = 10
    # Reproducible by default, from the seeds and XLA's deterministic mode (kzoo.train.determinism).
    deterministic: bool = True
    steps_per_execution: int = 0
    # XLA-compile the steps wherever the model supports it; false: never.
    jit_compile: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=lambda: {"name": "mlp"})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # "last": model.keras holds the last epoch's weights; "best": the best val_accuracy epoch's.
    checkpoint: str = "last"
    # Logged every epoch (val_ too) and tested (test_<name>); accuracy always is.
    metrics: list = field(default_factory=lambda: ["accuracy"])
    schedule: dict = field(default_factory=lambda: {"name": "constant"})
    callbacks: dict = field(default_factory=dict)
    tune: dict = field(default_factory=dict)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # Distribution (kzoo.train.distribution): auto, default, mirrored, tpu or multiworker.
    strategy: str = "default"
    # auto (bfloat16 where the hardware has it: kzoo.train.distribution.precision_policy), off,
    # mixed_float16, mixed_bfloat16.
    mixed_precision: str = "auto"
    # Multiply data.batch_size by the number of replicas (the per-replica batch stays the same).
    scale_batch_with_replicas: bool = False

    def to_dict(self) -> dict:
        d = _drop_none(dataclasses.asdict(self))
        if not self.finetune.stages:
            d.pop("finetune", None)  # single-stage recipes read as before
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _drop_none(d):
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, (list, tuple)):
        return [_drop_none(v) for v in d]
    return d


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", tuple: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def check_value(path: str, value, default, allow_table: bool = False):
    """Checks `value` has the type of `default`; ints are accepted for floats, tuples for lists."""
    key = path.rsplit(".", 1)[-1]
    if default is None:
        return value
    if allow_table and isinstance(value, dict) and "name" in value:
        return value
    ok = (
        (isinstance(default, bool) and isinstance(value, bool))
        or (isinstance(default, int) and not isinstance(default, bool) and isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (isinstance(default, str) and isinstance(value, str))
        or (isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)))
        or (isinstance(default, dict) and isinstance(value, dict))
    )
    if not ok:
        raise RecipeError(f"{path} must be {_type_name(default)}. Received: {key}={value!r}")
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):
        return list(value)
    return value


def build_section(cls, raw, path: str):
    """Builds dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise RecipeError(f"[{path}] must be a table. Received: {path}={raw!r}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RecipeError(f"Unknown key '{where}'.{closest(unknown[0], names)} Valid: {', '.join(names)}.")
    values = {}
    defaults = cls()
    for name, value in raw.items():
        sub = f"{path}.{name}" if path else name
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            values[name] = build_section(type(default), value, sub)
        else:
            values[name] = check_value(sub, value, default)
    return cls(**values)


def resolve_component(path: str, raw, defaults: dict) -> dict:
    """Checks a `{name = ..., **kwargs}` table against a builder's defaults and fills them in."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise RecipeError(f"[{path}] must be a table or a name. Received: {path}={raw!r}")
    given = dict(raw)
    given.pop("name", None)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise RecipeError(
            f"Unknown key '{path}.{unknown[0]}'.{closest(unknown[0], defaults)} "
            f"Valid: {', '.join(sorted(defaults)) or '(none)'}."
        )
    resolved = {"name": raw["name"]}
    for key, default in defaults.items():
        if key in given:
            resolved[key] = check_value(f"{path}.{key}", given[key], default, allow_table=key in SPEC_KEYS)
        elif default is not None:
            resolved[key] = list(default) if isinstance(default, tuple) else default
    return resolved


def validate_ranges(recipe: Recipe):
    """Range checks a type check cannot make, each naming the key and the bad value."""
    checks = [
        ("epochs", recipe.epochs, recipe.epochs >= 1, "at least 1"),
        ("steps_per_execution", recipe.steps_per_execution, recipe.steps_per_execution >= 0, ">= 0 (0: auto)"),
        ("data.eval_batch_size", recipe.data.eval_batch_size, recipe.data.eval_batch_size >= 0, ">= 0 (0: auto)"),
        ("data.batch_size", recipe.data.batch_size, recipe.data.batch_size >= 1, "at least 1"),
        ("data.validation_split", recipe.data.validation_split, 0 <= recipe.data.validation_split < 1, "in [0, 1)"),
        ("data.test_split", recipe.data.test_split, 0 <= recipe.data.test_split < 1, "in [0, 1)"),
        ("data.shuffle_buffer", recipe.data.shuffle_buffer, recipe.data.shuffle_buffer >= 1, "at least 1"),
        ("optimizer.lr", recipe.optimizer.lr, recipe.optimizer.lr > 0, "positive"),
        ("optimizer.momentum", recipe.optimizer.momentum, 0 <= recipe.optimizer.momentum < 1, "in [0, 1)"),
        ("optimizer.weight_decay", recipe.optimizer.weight_decay, recipe.optimizer.weight_decay >= 0, ">= 0"),
        ("optimizer.clipnorm", recipe.optimizer.clipnorm, recipe.optimizer.clipnorm >= 0, ">= 0"),
        ("optimizer.clipvalue", recipe.optimizer.clipvalue, recipe.optimizer.clipvalue >= 0, ">= 0"),
        ("optimizer.epsilon", recipe.optimizer.epsilon, recipe.optimizer.epsilon > 0, "positive"),
    ]
    if recipe.data.validation_split + recipe.data.test_split >= 1:
        raise RecipeError(
            "data.validation_split + data.test_split must be below 1. Received: "
            f"{recipe.data.validation_split} + {recipe.data.test_split}"
        )
    for key, value, ok, what in checks:
        if not ok:
            raise RecipeError(f"{key} must be {what}. Received: {key.rsplit('.', 1)[-1]}={value}")
    optimizers = _optimizer_names()
    if recipe.optimizer.name not in optimizers:
        name = recipe.optimizer.name
        raise RecipeError(f"Unknown optimizer.name '{name}'.{closest(name, optimizers)} Valid: {', '.join(optimizers)}.")
    if recipe.optimizer.name == "gains":
        validate_gain_config(recipe.optimizer)
    if len(recipe.data.image_size) not in (0, 2) or any(
        not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in recipe.data.image_size
    ):
        raise RecipeError(f"data.image_size must be [height, width]. Received: image_size={recipe.data.image_size}")
    model = recipe.model
    for key in ("dropout",):
        if key in model and isinstance(model[key], (int, float)) and not 0 <= model[key] < 1:
            raise RecipeError(f"model.{key} must be in [0, 1). Received: {key}={model[key]}")
    for key in ("depth", "width"):
        if key in model and isinstance(model[key], int) and model[key] < 1:
            raise RecipeError(f"model.{key} must be at least 1. Received: {key}={model[key]}")
    for key in ("l1", "l2"):
        if key in model and isinstance(model[key], (int, float)) and model[key] < 0:
            raise RecipeError(f"model.{key} must be >= 0. Received: {key}={model[key]}")
    _more_ranges(recipe)
    return recipe


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _more_ranges(recipe: Recipe):
    """Further range checks (reliability issue): every check a recipe can fail runs here, before
    any data is loaded, so a bad value never costs a download or a started training."""
    def fail(key, value, what):
        raise RecipeError(f"{key} must be {what}. Received: {key.rsplit('.', 1)[-1]}={value}")

    # No NaN or infinity anywhere: `lr > 0` alone lets lr=inf through.
    sections = [("", recipe), ("data", recipe.data), ("data.augment", recipe.data.augment),
                ("optimizer", recipe.optimizer)]
    for prefix, obj in sections:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"{prefix}.{f.name}".lstrip("."), value, "a finite number")
    for table, entries in [("model", recipe.model), ("schedule", recipe.schedule)] + [
            (f"callbacks.{name}", kwargs) for name, kwargs in recipe.callbacks.items()]:
        for key, value in entries.items():
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"{table}.{key}", value, "a finite number")
    for key in ("seed", "data.split_seed"):
        value = recipe.seed if key == "seed" else recipe.data.split_seed
        if not 0 <= value < 2**32:
            fail(key, value, "in [0, 2**32)")
    opt, aug, model = recipe.optimizer, recipe.data.augment, recipe.model
    for key in ("beta_1", "beta_2", "rho"):
        if not 0 <= getattr(opt, key) < 1:
            fail(f"optimizer.{key}", getattr(opt, key), "in [0, 1)")
    for key in ("translation", "rotation", "zoom"):
        if not 0 <= getattr(aug, key) < 1:
            fail(f"data.augment.{key}", getattr(aug, key), "in [0, 1)")
    if aug.crop < 0:
        fail("data.augment.crop", aug.crop, ">= 0")
    for key in ("mixup", "cutmix"):
        if getattr(aug, key) < 0:
            fail(f"data.augment.{key}", getattr(aug, key), ">= 0 (0: off)")
    for key in ("erasing", "color_jitter"):
        if not 0 <= getattr(aug, key) <= 1:
            fail(f"data.augment.{key}", getattr(aug, key), "in [0, 1]")
    if not 0 <= aug.policy_magnitude <= 10:
        fail("data.augment.policy_magnitude", aug.policy_magnitude, "in [0, 10]")
    if aug.policy == "none" and aug.policy_magnitude != AugmentConfig.policy_magnitude:
        raise RecipeError("data.augment.policy_magnitude needs data.augment.policy = \"randaugment\" or \"augmix\". "
                          f"Received: policy_magnitude={aug.policy_magnitude}")
    for key, value, valid in (("data.augment.flip", aug.flip, FLIPS), ("data.augment.policy", aug.policy, POLICIES),
                              ("data.standardize", recipe.data.standardize, STANDARDIZE)):
        if value not in valid:
            raise RecipeError(f"{key} must be one of {', '.join(valid)}. Received: {key.rsplit('.', 1)[-1]}={value!r}")
    if _number(model.get("bn_momentum")) and not 0 <= model["bn_momentum"] < 1:
        fail("model.bn_momentum", model["bn_momentum"], "in [0, 1)")
    for key in ("kernel_size", "convs_per_stage"):
        if _number(model.get(key)) and model[key] < 1:
            fail(f"model.{key}", model[key], "at least 1")
    if isinstance(model.get("filters"), list) and (
            not model["filters"] or any(not _number(f) or f < 1 for f in model["filters"])):
        fail("model.filters", model["filters"], "a non-empty list of positive integers")
    sched = recipe.schedule
    # A warm-up as long as a run shortened with --epochs is clamped by the schedule, not refused.
    if _number(sched.get("warmup_epochs")) and sched["warmup_epochs"] < 0:
        fail("schedule.warmup_epochs", sched["warmup_epochs"], ">= 0")
    if _number(sched.get("decay_rate")) and not 0 < sched["decay_rate"] <= 1:
        fail("schedule.decay_rate", sched["decay_rate"], "in (0, 1]")
    for name, kwargs in recipe.callbacks.items():
        for key in ("patience", "min_delta", "start_from_epoch"):
            if _number(kwargs.get(key)) and kwargs[key] < 0:
                fail(f"callbacks.{name}.{key}", kwargs[key], ">= 0")
    chance = recipe.callbacks.get("chance_check", {})
    if _number(chance.get("epochs")) and chance["epochs"] < 1:
        fail("callbacks.chance_check.epochs", chance["epochs"], "at least 1")
    if _number(chance.get("tolerance")) and not 0 < chance["tolerance"] < 1:
        fail("callbacks.chance_check.tolerance", chance["tolerance"], "in (0, 1)")


def component_names_exist(recipe: Recipe):
    """Checks every activation, initializer and normalization named in [model] is registered."""
    for key, registry in (("activation", activations.ACTIVATIONS), ("initializer", initializers.INITIALIZERS),
                          ("normalization", norms.NORMS)):
        if key not in recipe.model:
            continue
        spec = recipe.model[key]
        name = spec.get("name") if isinstance(spec, dict) else spec
        if key == "activation" and activations.exists(name):
            continue  # registered here, or one of Keras's own activation functions
        if key == "initializer" and name not in registry:
            try:
                keras.initializers.get(name)
                continue
            except (ValueError, TypeError):
                pass
        if name not in registry:
            raise RecipeError(
                f"Unknown {key} '{name}' in model.{key}.{closest(name, registry.list())} "
                f"See `kzoo list {key if key != 'normalization' else 'norm'}s`."
            )


def build_recipe(raw: dict[str, Any]) -> Recipe:
    """Validates a raw recipe dict (as parsed from TOML, overrides applied) into a Recipe."""
    raw = dict(raw)
    model_raw = raw.pop("model", {"name": "mlp"})
    schedule_raw = raw.pop("schedule", {"name": "constant"})
    callbacks_raw = raw.pop("callbacks", {})
    finetune_raw = raw.pop("finetune", {})
    loss_raw = raw.pop("loss", {})
    recipe = build_section(Recipe, raw, "")
    recipe.loss = build_loss_section(loss_raw)

    if isinstance(model_raw, str):
        model_raw = {"name": model_raw}
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        raise RecipeError("[model] needs a name, e.g. name = \"mlp\". See `kzoo list models`.")
    _registered("model.name", model_raw["name"], MODELS)
    defaults = model_defaults(model_raw["name"])
    defaults.pop("seed", None)  # the recipe's top-level seed is used
    recipe.model = resolve_component("model", model_raw, defaults)

    if isinstance(schedule_raw, str):
        schedule_raw = {"name": schedule_raw}
    _registered("schedule.name", (schedule_raw or {}).get("name", "constant"), SCHEDULES)
    schedule_raw = {"name": "constant", **schedule_raw}
    recipe.schedule = resolve_component("schedule", schedule_raw, schedule_defaults(schedule_raw["name"]))

    if not isinstance(callbacks_raw, dict):
        raise RecipeError(f"[callbacks] must be a table of tables. Received: callbacks={callbacks_raw!r}")
    recipe.callbacks = {}
    for cb_name, cb_raw in callbacks_raw.items():
        _registered(f"callbacks.{cb_name}", cb_name, CALLBACKS)
        if cb_raw is True:
            cb_raw = {}
        if not isinstance(cb_raw, dict):
            raise RecipeError(f"[callbacks.{cb_name}] must be a table. Received: {cb_name}={cb_raw!r}")
        resolved = resolve_component(f"callbacks.{cb_name}", {"name": cb_name, **cb_raw}, callback_defaults(cb_name))
        resolved.pop("name")
        recipe.callbacks[cb_name] = resolved
    recipe.finetune = build_finetune(finetune_raw, recipe, explicit_epochs="epochs" in raw)
    validate_ranges(recipe)
    validate_training_levers(recipe)
    component_names_exist(recipe)
    _validate_distribution_and_tune(recipe, {**raw, "finetune": finetune_raw}, model_raw, schedule_raw,
                                    callbacks_raw)
    return recipe


# Validators of sections that higher layers own, registered by them (kzoo.tuning registers
# [tune]): the schema never imports the layers above it.
SECTION_VALIDATORS: dict = {}


def register_section_validator(section: str, validate):
    """Registers `validate(value, raw_recipe) -> value` for a top-level recipe section."""
    SECTION_VALIDATORS[section] = validate


def _validate_distribution_and_tune(recipe, raw, model_raw, schedule_raw, callbacks_raw):
    """The strategy fields, the combinations every path must honour, and the [tune] section."""
    validate_strategy_fields(recipe)
    validate_combinations(recipe)
    if recipe.tune:
        full = {**raw, "model": model_raw, "schedule": schedule_raw, "callbacks": callbacks_raw}
        recipe.tune = SECTION_VALIDATORS["tune"](recipe.tune, full)


def validate_combinations(recipe):
    """Refuses, in one line, settings that no training path could honour together."""
    opt = recipe.optimizer
    wants_momentum = "momentum_warmup" in recipe.callbacks or recipe.schedule.get("name") == "one_cycle"
    if wants_momentum and (opt.name == "adagrad" or (opt.name == "rmsprop" and not opt.momentum)):
        what = "callbacks.momentum_warmup" if "momentum_warmup" in recipe.callbacks else "schedule one_cycle's momentum"
        raise RecipeError(f"{what} needs an optimizer with a momentum: sgd, rmsprop with momentum > 0, adam, "
                          f"adamw or gains. Received: optimizer.name={opt.name}, momentum={opt.momentum}")
    ft = recipe.finetune
    if ft.pretrain.dataset and ft.backbone:
        raise RecipeError(f"finetune.pretrain trains the [model]; leave finetune.backbone empty. "
                          f"Received: backbone={ft.backbone!r}")
    if ft.scratch_baseline and ft.backbone and ft.backbone not in MODELS:
        raise RecipeError("finetune.scratch_baseline needs a zoo backbone (the [model] or a zoo name). "
                          f"Received: backbone={ft.backbone!r}")
    if recipe.strategy == "multiworker":
        if ft.pretrain.dataset or ft.scratch_baseline:
            raise RecipeError("strategy = multiworker trains the stages themselves; run [finetune.pretrain] and "
                              "scratch_baseline on one machine. Received: strategy=multiworker")


def _registered(path, name, registry):
    if not isinstance(name, str):
        raise RecipeError(f"{path} must be a string. Received: {name!r}")
    if name not in registry:
        raise RecipeError(
            f"Unknown {registry.kind} '{name}' in {path}.{closest(name, registry.list())} "
            f"See `kzoo list {registry.kind}s`."
        )
