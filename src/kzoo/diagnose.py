"""Diagnostics that make the lectures' findings visible: how initialization and activation
shape the activations and gradients of a deep plain network; and, for a finished run, whether
it could learn at all (a training loss at chance, and why).

Example:
    >>> rows = kzoo.diagnose.init_study([("he_normal", "relu"), ("glorot_normal", "relu")], depth=10)
    >>> kzoo.diagnose.plot_init_study(rows, "init.png")
    >>> kzoo.diagnose.diagnose_run("runs/finetune-MobileNetV2").line
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kzoo.callbacks.chance import (
    at_chance,
    chance_line,
    chance_loss,
    feature_spread,
    likely_cause,
    random_backbone_frozen_bn,
)
from kzoo.errors import RunDirError, UserError
from kzoo.evaluate import load_run
from kzoo.plots import _pyplot
from kzoo.train.session import PROBE, RunData
from kzoo.zoo import activations, initializers

# The lectures' experiment, plus SELU and LSUV.
DEFAULT_PAIRS = (
    ("small_normal", "tanh"),
    ("glorot_normal", "tanh"),
    ("glorot_normal", "relu"),
    ("he_normal", "relu"),
    ("lecun_normal", "selu"),
    ("lsuv", "relu"),
)


@dataclass
class PairStats:
    """Per-layer statistics of one initializer x activation pair at initialization.

    `pre_std` is the standard deviation of each Dense layer's output (before the activation),
    `act_mean`/`act_std` of the activation's output, `grad_mean`/`grad_std` of the gradient of
    the loss with respect to each layer's kernel. `samples` holds a few activation values per
    layer for the histograms.
    """

    initializer: str
    activation: str
    pre_std: list = field(default_factory=list)
    act_mean: list = field(default_factory=list)
    act_std: list = field(default_factory=list)
    grad_mean: list = field(default_factory=list)
    grad_std: list = field(default_factory=list)
    samples: list = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return f"{self.initializer} + {self.activation}"


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """`"he_normal:relu,glorot_normal:tanh"` -> `[("he_normal", "relu"), ("glorot_normal", "tanh")]`."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.count(":") != 1:
            raise UserError(f"A pair is INITIALIZER:ACTIVATION, e.g. he_normal:relu. Received: {item}")
        init, act = (part.strip() for part in item.split(":"))
        pairs.append((init, act))
    if not pairs:
        raise UserError(f"No initializer:activation pair given. Received: {text!r}")
    return pairs


def deep_plain_net(initializer: str, activation: str, depth: int = 10, width: int = 1024, seed: int = 0):
    """`depth` Dense layers of `width` units without bias or normalization, each followed by
    the activation: the lectures' network. Returns a model whose outputs are every layer's
    pre-activation and activation, in order."""
    data_dependent = initializer == "lsuv"
    inputs = keras.Input(shape=(width,), name="input")
    x, outputs = inputs, []
    for i in range(depth):
        init = initializers.get("orthogonal" if data_dependent else initializer, seed=seed + i)
        pre = keras.layers.Dense(width, use_bias=False, kernel_initializer=init, name=f"layer{i}_dense")(x)
        x = activations.get(activation, name=f"layer{i}_act")(pre)
        outputs += [pre, x]
    return keras.Model(inputs, outputs, name=f"plain_{initializer}_{activation}")


def init_study(pairs=DEFAULT_PAIRS, depth: int = 10, width: int = 1024, batch: int = 512, seed: int = 0,
               samples: int = 2000) -> list[PairStats]:
    """Feeds a unit-Gaussian batch through a deep plain network for each
    (initializer, activation) pair and records every layer's activation and gradient statistics.

    The loss is `sum(h_L * r) / batch` for a fixed unit-Gaussian `r`, so the gradient that
    reaches the last layer has unit scale whatever the network; how it changes going back
    through the layers is the network's doing. With `lsuv` the network is built orthonormal,
    then `lsuv_init` rescales it on the same batch.

    Args:
        pairs: (initializer, activation) names. Defaults to the lectures' six pairs.
        depth: number of Dense layers. Defaults to `10`.
        width: units per layer (and input size). Defaults to `1024`.
        batch: examples in the Gaussian batch. Defaults to `512`.
        seed: seed of the batch and the weights. Defaults to `0`.
        samples: activation values kept per layer for the histograms. Defaults to `2000`.

    Returns:
        One `PairStats` per pair.

    Reference:
        Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html; He et al. 2015,
        https://arxiv.org/abs/1502.01852; Klambauer et al. 2017, https://arxiv.org/abs/1706.02515;
        Mishkin & Matas 2015, https://arxiv.org/abs/1511.06422
    """
    for name, value in (("depth", depth), ("width", width), ("batch", batch)):
        if value < 1:
            raise UserError(f"{name} must be at least 1. Received: {name}={value}")
    for init, act in pairs:  # unknown names fail before any work, with the closest names
        if init not in initializers.INITIALIZERS:
            initializers.INITIALIZERS.get(init)
        if not activations.exists(act):
            activations.ACTIVATIONS.get(act)

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width)).astype("float32")
    keep = rng.choice(batch * width, size=min(samples, batch * width), replace=False)
    results = []
    for init, act in pairs:
        model = deep_plain_net(init, act, depth, width, seed)
        if init == "lsuv":
            initializers.lsuv_init(model, x, seed=seed)
        kernels = [model.get_layer(f"layer{i}_dense").kernel for i in range(depth)]
        r = tf.constant(np.random.default_rng(seed + 1).standard_normal((batch, width)).astype("float32"))
        with tf.GradientTape() as tape:
            outs = model(x, training=False)
            loss = tf.reduce_sum(outs[-1] * r) / batch
        grads = tape.gradient(loss, [k.value for k in kernels])
        stats = PairStats(init, act)
        for i in range(depth):
            pre, post = np.asarray(outs[2 * i]), np.asarray(outs[2 * i + 1])
            g = np.zeros(kernels[i].shape) if grads[i] is None else np.asarray(grads[i])
            stats.pre_std.append(float(pre.std()))
            stats.act_mean.append(float(post.mean()))
            stats.act_std.append(float(post.std()))
            stats.grad_mean.append(float(g.mean()))
            stats.grad_std.append(float(g.std()))
            stats.samples.append(post.reshape(-1)[keep])
        results.append(stats)
    return results


def table_rows(results: list[PairStats]) -> list[list[str]]:
    """One row per pair and layer: the numbers `kzoo diagnose init` prints."""
    rows = []
    for s in results:
        for i in range(len(s.act_std)):
            rows.append([s.initializer, s.activation, str(i + 1), f"{s.act_mean[i]:+.4f}", f"{s.act_std[i]:.4g}",
                         f"{s.grad_mean[i]:+.3e}", f"{s.grad_std[i]:.3e}"])
    return rows


TABLE_HEADER = ["initializer", "activation", "layer", "act mean", "act std", "grad mean", "grad std"]


def plot_init_study(results: list[PairStats], path: str, max_columns: int = 10) -> str:
    """A grid of per-layer activation histograms, one row per pair (at most `max_columns`
    layers, evenly spaced, per row, on the row's common x-range), saved as a PNG at `path`."""
    plt = _pyplot()
    depth = len(results[0].samples)
    columns = sorted(set(np.linspace(0, depth - 1, min(depth, max_columns)).round().astype(int).tolist()))
    fig, axes = plt.subplots(len(results), len(columns), figsize=(1.6 * len(columns) + 1.2, 1.35 * len(results) + 0.6),
                             squeeze=False)
    for r, s in enumerate(results):
        # One x-range per row, so a collapse toward zero shows as a narrowing spike.
        spread = max(max(float(np.abs(s.samples[layer]).max()) for layer in columns), 1e-12)
        for c, layer in enumerate(columns):
            ax = axes[r][c]
            values = s.samples[layer]
            ax.hist(values, bins=40, range=(-spread, spread), color="tab:blue")
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_title(f"layer {layer + 1}: std {s.act_std[layer]:.2g}", fontsize=7)
            if c == 0:
                ax.set_ylabel(s.label, fontsize=8)
    fig.suptitle("Activations at initialization (unit-Gaussian input)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- A finished run: did it learn at all? -------------------------------------------------------


@dataclass
class RunDiagnosis:
    """What `diagnose_run` found in a run folder. `cause` is one of
    `kzoo.callbacks.chance.CAUSES` for a run at chance, else `""`; `line` says it in words."""

    run_dir: str
    at_chance: bool
    losses: list
    num_classes: int
    line: str
    cause: str = ""
    feature_spread: float | None = None
    note: str = ""


def _read_run(run_dir: str) -> tuple[list[dict], dict]:
    """`(history rows, metrics)` of a finished run folder; anything else is a `RunDirError`."""
    if not os.path.isdir(run_dir):
        raise RunDirError(f"No such run directory: {run_dir}")
    for name in ("history.csv", "metrics.json"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise RunDirError(f"{run_dir} holds no finished run: {name} is missing. Received: {run_dir}")
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        with open(os.path.join(run_dir, "history.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        losses = [float(row["loss"]) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{run_dir} holds a damaged history.csv or metrics.json ({e}). Received: {run_dir}") from None
    names = metrics.get("class_names") if isinstance(metrics, dict) else None
    if not isinstance(names, list) or len(names) < 2 or not losses:
        raise RunDirError(f"{run_dir} has no class names or no training epochs to diagnose. Received: {run_dir}")
    return [{**row, "loss": loss} for row, loss in zip(rows, losses)], metrics


def _learning_rate(row: dict, recipe) -> float | None:
    try:
        return float(row["learning_rate"])
    except (KeyError, TypeError, ValueError):
        return float(recipe.optimizer.lr) if recipe is not None else None


def diagnose_run(run_dir: str, epochs: int = 2, tolerance: float = 0.02, trust_model: bool = False) -> RunDiagnosis:
    """Says whether a finished run stayed at chance over its first epochs and, if so, the
    likely cause: the same checks, in the same order, as the `ChanceCheck` callback that
    watches every run. The losses come from `history.csv`, the number of classes from
    `metrics.json`'s `class_names`; for a run at chance the recipe (`recipe.toml`), the saved
    model and a probe batch of the run's training data, rebuilt from the recipe, give the
    feature check. A model or dataset that cannot be read again leaves that check out.

    Args:
        run_dir: the run folder (`history.csv`, `metrics.json`, `recipe.toml`, `model.keras`).
        epochs: the number of first epochs checked. Defaults to `2`.
        tolerance: the distance from ln C, relative, that counts as chance. Defaults to `0.02`.
        trust_model: let Keras rebuild Python code from the model file. Defaults to `False`.

    Returns:
        A `RunDiagnosis`.
    """
    rows, metrics = _read_run(run_dir)
    classes = len(metrics["class_names"])
    window = rows[:min(epochs, len(rows))]
    losses = [row["loss"] for row in window]
    if not at_chance(losses, classes, tolerance):
        shown = ", ".join(f"{loss:.4f}" for loss in losses)
        line = (f"not at chance: training loss {shown} over the first {len(losses)} epoch(s), ln {classes} = "
                f"{chance_loss(classes):.4f}; last epoch {rows[-1]['loss']:.4f}.")
        return RunDiagnosis(run_dir, False, losses, classes, line)
    recipe, spread, note = _recipe_and_spread(run_dir, trust_model)
    cause, explanation = likely_cause(spread, random_backbone_frozen_bn(recipe), _learning_rate(window[-1], recipe))
    return RunDiagnosis(run_dir, True, losses, classes, chance_line(losses, classes, explanation, tolerance), cause,
                        spread, note)


def _recipe_and_spread(run_dir, trust_model):
    """The run's recipe and the feature spread of its model on a probe batch, as far as they
    can be read again: `(recipe or None, spread or None, note)`."""
    try:
        recipe, model = load_run(run_dir, trust_model=trust_model)
    except UserError as e:
        return None, None, f"the recipe or model could not be read ({e}), so the feature check was left out"
    try:
        x, _ = RunData(recipe).data.sample(PROBE)
    except UserError as e:
        return recipe, None, f"the training data could not be read again ({e}), so the feature check was left out"
    return recipe, feature_spread(model, x), ""
