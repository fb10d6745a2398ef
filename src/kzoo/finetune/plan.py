"""Stage plans: which layer groups train, for how many epochs, at which learning rates.

A plan is an ordered list of stages. The CLI spelling is one string,
`"head:3@1e-3, top2:3@1e-4, all:4@1e-5..1e-4"`: each stage is `WHAT:EPOCHS@LR`, where WHAT is
`head` (only the new head), `topK` (the head and the top K stages) or `all` (every group, the stem
included), and LR is one rate or a `LO..HI` range (fastai's `slice(lo, hi)`: the head trains at
HI, the lowest trainable group at LO, the groups between at geometrically spaced rates). A recipe
writes the same as strings or as tables: `{trainable = "top2", epochs = 3, lr = 1e-4,
lr_factor = 0.5}`, where `lr_factor` multiplies each lower group's rate by the group above's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kzoo.errors import RecipeError

_WHAT = re.compile(r"^(head|all|top:?(\d+))$")
_STAGE = re.compile(r"^\s*([A-Za-z0-9:]+?)\s*:\s*(\d+)\s*@\s*([^\s,]+)\s*$")


@dataclass
class Stage:
    """One stage of a plan.

    Args:
        trainable: `head`, `topK` (or `top:K`) or `all`.
        epochs: epochs of the stage.
        lr: learning rate of the head (the top trainable group).
        lr_factor: each lower trainable group's rate is this factor times the group above's.
            Defaults to `1.0` (one rate for all).
        lr_min: the lowest trainable group's rate; sets `lr_factor` geometrically. Defaults to
            `None`.
    """

    trainable: str
    epochs: int
    lr: float
    lr_factor: float = 1.0
    lr_min: float | None = None

    def __post_init__(self):
        m = _WHAT.match(str(self.trainable))
        if not m:
            raise RecipeError(f"A stage trains 'head', 'topK' or 'all'. Received: trainable={self.trainable!r}")
        if m.group(2) is not None:
            self.trainable = f"top{int(m.group(2))}"
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise RecipeError(f"A stage's epochs must be an integer of at least 1. Received: epochs={self.epochs!r}")
        for key in ("lr", "lr_factor") + (("lr_min",) if self.lr_min is not None else ()):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise RecipeError(f"A stage's {key} must be a positive number. Received: {key}={value!r}")
        if self.lr_factor > 1:
            raise RecipeError(f"lr_factor must be in (0, 1]: lower groups learn slower. Received: lr_factor={self.lr_factor}")
        if self.lr_min is not None and self.lr_min > self.lr:
            raise RecipeError(f"A stage's lr_min must not exceed its lr ({self.lr}). Received: lr_min={self.lr_min}")

    def trainable_groups(self, num_stages: int) -> int:
        """How many groups, counted from the head down, train in this stage (of `num_stages + 2`:
        head, stages, stem)."""
        if self.trainable == "head":
            return 1
        if self.trainable == "all":
            return num_stages + 2
        k = int(self.trainable[3:])
        if k > num_stages:
            raise RecipeError(
                f"The model has {num_stages} stages; a stage cannot unfreeze more. Received: trainable={self.trainable!r}")
        return 1 + k

    def rates(self, num_stages: int, layer_decay: float = 0.0) -> list[float]:
        """Learning rates of the trainable groups, from the head down.

        Args:
            num_stages: the model's stages (between its stem and its head).
            layer_decay: layer-wise rate decay: the group `k` places below the head (the top
                stage 1, ..., the stem `num_stages + 1`) learns `layer_decay**k` times the
                stage's rate for it; for a ViT, whose stages are its transformer blocks, block
                `i` of `L` (from 1) gets `lr * layer_decay**(L + 1 - i)`. `0` or `1`: off.
                Defaults to `0.0`.

        Reference:
            Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022 (layer-wise
            learning-rate decay); Clark et al., "ELECTRA", ICLR 2020.
        """
        n = self.trainable_groups(num_stages)
        factor = self.lr_factor
        if self.lr_min is not None:
            factor = (self.lr_min / self.lr) ** (1 / (n - 1)) if n > 1 else 1.0
        decay = layer_decay if 0 < layer_decay < 1 else 1.0
        return [self.lr * factor**i * decay**i for i in range(n)]

    def spelling(self) -> str:
        """The stage in the CLI spelling (`top2:3@1e-4`)."""
        lr = f"{self.lr:g}"
        if self.lr_min is not None:
            lr = f"{self.lr_min:g}..{self.lr:g}"
        elif self.lr_factor != 1:
            return f"{self.trainable}:{self.epochs}@{lr} (x{self.lr_factor:g} per group)"
        return f"{self.trainable}:{self.epochs}@{lr}"


def _number(text, what):
    try:
        return float(text)
    except ValueError:
        raise RecipeError(f"Bad learning rate in stage '{what}'. Received: lr={text!r}") from None


def parse_stage(spec) -> Stage:
    """A `Stage` from `"top2:3@1e-4"`, `"all:4@1e-5..1e-3"` or a table."""
    if isinstance(spec, Stage):
        return spec
    if isinstance(spec, dict):
        allowed = {"trainable", "epochs", "lr", "lr_factor", "lr_min"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise RecipeError(f"Unknown key '{unknown[0]}' in a stage; valid: {', '.join(sorted(allowed))}. Received: {spec}")
        missing = sorted({"trainable", "epochs", "lr"} - set(spec))
        if missing:
            raise RecipeError(f"A stage table needs trainable, epochs and lr. Received: {spec}")
        return Stage(**spec)
    if not isinstance(spec, str):
        raise RecipeError(f"A stage is a string like 'head:3@1e-3' or a table. Received: {spec!r}")
    m = _STAGE.match(spec)
    if not m:
        raise RecipeError(f"A stage reads WHAT:EPOCHS@LR, e.g. 'top2:3@1e-4'. Received: {spec.strip()!r}")
    what, epochs, lr = m.group(1), int(m.group(2)), m.group(3)
    if ".." in lr:
        lo, hi = lr.split("..", 1)
        return Stage(what, epochs, _number(hi, spec), lr_min=_number(lo, spec))
    return Stage(what, epochs, _number(lr, spec))


def parse_stages(spec) -> list[Stage]:
    """A plan from `"head:3@1e-3, all:4@1e-5"` or a list of strings and tables.

    Example:
        >>> [s.trainable for s in parse_stages("head:3@1e-3, top2:3@1e-4, all:4@1e-5")]
        ['head', 'top2', 'all']
    """
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec or [])
    if not items:
        raise RecipeError(f"A stage plan needs at least one stage, e.g. 'head:3@1e-3, all:4@1e-5'. Received: {spec!r}")
    return [parse_stage(s) for s in items]
