"""Search spaces: a recipe's [tune] section, validated and turned into KerasTuner hyperparameters.

A [tune] section maps recipe keys (the dotted names `--set` takes) to spaces. The
hyperparameter is named after the key, so a trial's values are recipe overrides and the best
trial exports as a plain recipe:

    [tune]
    "optimizer.lr" = { type = "float", min = 1e-4, max = 1e-2, sampling = "log" }
    "model.depth" = { type = "int", min = 1, max = 4 }
    "model.activation" = ["relu", "gelu", "silu"]        # a list is a choice
    "model.dropout" = { type = "float", min = 0.0, max = 0.3, step = 0.1 }
    "optimizer.name" = ["adam", "sgd"]
    "optimizer.momentum" = { type = "float", min = 0.0, max = 0.95, when = { "optimizer.name" = "sgd" } }

Kinds: `choice` (values), `int` (min, max, step, sampling), `float` (min, max, step,
sampling `linear`/`log`/`reverse_log`), `bool`. `when` makes an entry conditional: it is only
searched while each named (tuned) key has one of the given values. The recipe's own value is
each space's default, so the untuned recipe is the search's default point.
"""

from __future__ import annotations

import contextlib
import copy

from kzoo.errors import RecipeError, closest
from kzoo.recipes.loader import apply_overrides, parse_value
from kzoo.recipes.schema import SPEC_KEYS, build_recipe

KINDS = ("choice", "int", "float", "bool")
SAMPLINGS = ("linear", "log", "reverse_log")
_ALLOWED = {
    "choice": {"type", "values", "when"},
    "int": {"type", "min", "max", "step", "sampling", "when"},
    "float": {"type", "min", "max", "step", "sampling", "when"},
    "bool": {"type", "when"},
}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def flatten(tune: dict, prefix: str = "") -> dict:
    """`{"optimizer": {"lr": {...}}}` and `{"optimizer.lr": {...}}` both give `{"optimizer.lr": {...}}`."""
    flat = {}
    for key, value in tune.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and "type" not in value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def _normalize(key: str, spec) -> dict:
    """One entry in its long form, `{type = ..., ...}`, with the kind's own checks."""
    where = f"tune.{key}"
    if isinstance(spec, (list, tuple)):
        spec = {"type": "choice", "values": list(spec)}
    if not isinstance(spec, dict):
        raise RecipeError(f"{where} must be a list of choices or a table with a type. Received: {key}={spec!r}")
    spec = dict(spec)
    kind = spec.get("type")
    if kind not in KINDS:
        raise RecipeError(f"{where}.type must be one of {', '.join(KINDS)}.{closest(kind, KINDS)} Received: type={kind!r}")
    unknown = sorted(set(spec) - _ALLOWED[kind])
    if unknown:
        raise RecipeError(
            f"Unknown key '{where}.{unknown[0]}' for a {kind} space.{closest(unknown[0], _ALLOWED[kind])} "
            f"Valid: {', '.join(sorted(_ALLOWED[kind]))}."
        )
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{where}.values must be a non-empty list. Received: values={values!r}")
        kinds = {type(v) if not _is_number(v) else float for v in values}
        if any(isinstance(v, dict) for v in values) or len(kinds) > 1:
            raise RecipeError(f"{where}.values must all be of one type (numbers, strings, booleans or lists). "
                              f"Received: values={values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise RecipeError(f"{where}.values has duplicates. Received: values={values!r}")
    elif kind in ("int", "float"):
        for bound in ("min", "max"):
            if bound not in spec:
                raise RecipeError(f"{where} needs {bound} for a {kind} space. Received: {key}={spec!r}")
        lo, hi = spec["min"], spec["max"]
        ok_type = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else _is_number
        for name, v in (("min", lo), ("max", hi)) + ((("step", spec["step"]),) if "step" in spec else ()):
            if not ok_type(v):
                raise RecipeError(f"{where}.{name} must be {'an integer' if kind == 'int' else 'a number'}. "
                                  f"Received: {name}={v!r}")
        if not lo < hi:
            raise RecipeError(f"{where}: min must be below max. Received: min={lo}, max={hi}")
        sampling = spec.setdefault("sampling", "linear")
        if sampling not in SAMPLINGS:
            raise RecipeError(f"{where}.sampling must be one of {', '.join(SAMPLINGS)}. Received: sampling={sampling!r}")
        if sampling != "linear" and lo <= 0:
            raise RecipeError(f"{where}: {sampling} sampling needs min > 0. Received: min={lo}")
        if "step" in spec and spec["step"] <= 0:
            raise RecipeError(f"{where}.step must be positive. Received: step={spec['step']}")
        if kind == "int":
            spec.setdefault("step", 1)
        else:
            spec["min"], spec["max"] = float(lo), float(hi)
            if "step" in spec:
                spec["step"] = float(spec["step"])
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, dict) or not when:
            raise RecipeError(f"{where}.when must be a table of key = value(s). Received: when={when!r}")
        spec["when"] = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in when.items()}
    return spec


def candidate_values(spec: dict) -> list:
    """The values that bound a space: every choice, or the two ends of a range."""
    kind = spec["type"]
    if kind == "choice":
        return list(spec["values"])
    if kind == "bool":
        return [False, True]
    return [spec["min"], spec["max"]]


def _flat_recipe(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and key not in ("activation", "initializer", "normalization"):
            out.update(_flat_recipe(value, path))
        out[path] = value
    return out


def validate_tune(tune: dict, raw: dict) -> dict:
    """Checks a [tune] section against the recipe it belongs to; returns its long form.

    Each key must be a recipe key, each `when` must name another tuned key with values that
    key can take, and every bounding value of each space must itself give a valid recipe.
    Called by `kzoo.recipes.schema.build_recipe`.
    """
    if not tune:
        return {}
    if not isinstance(tune, dict):
        raise RecipeError(f"[tune] must be a table. Received: tune={tune!r}")
    spaces = {key: _normalize(key, spec) for key, spec in flatten(tune).items()}
    base = {k: copy.deepcopy(v) for k, v in raw.items() if k != "tune"}
    known = _flat_recipe(build_recipe(copy.deepcopy(base)).to_dict())
    for key, spec in spaces.items():
        is_section = isinstance(known.get(key), dict) and key.rsplit(".", 1)[-1] not in SPEC_KEYS
        if key not in known or key in ("tune", "name", "description") or is_section:
            raise RecipeError(f"tune.{key} is not a recipe key.{closest(key, known)} "
                              f"Use the dotted names of `kzoo show`. Received: {key}")
        for value in candidate_values(spec):
            try:
                build_recipe(apply_overrides(copy.deepcopy(base), {key: value}))
            except RecipeError as e:
                raise RecipeError(f"tune.{key}: the value {value!r} does not give a valid recipe: {e}") from None
        for parent, values in spec.get("when", {}).items():
            if parent not in spaces:
                raise RecipeError(f"tune.{key}.when names '{parent}', which is not tuned."
                                  f"{closest(parent, spaces)} Received: when={spec['when']}")
            allowed = candidate_values(spaces[parent]) if spaces[parent]["type"] in ("choice", "bool") else None
            bad = [v for v in values if allowed is not None and v not in allowed]
            if bad:
                raise RecipeError(f"tune.{key}.when: '{parent}' never takes {bad[0]!r}. Received: when={spec['when']}")
    _order(spaces)  # rejects cycles
    return spaces


def _order(spaces: dict) -> list:
    """Keys with every `when` parent before its children (conditions must be declared first)."""
    ordered, seen, visiting = [], set(), set()

    def visit(key):
        if key in seen:
            return
        if key in visiting:
            raise RecipeError(f"tune.{key}.when forms a cycle. Received: when={spaces[key]['when']}")
        visiting.add(key)
        for parent in spaces[key].get("when", {}):
            visit(parent)
        visiting.discard(key)
        seen.add(key)
        ordered.append(key)

    for key in spaces:
        visit(key)
    return ordered


def _encode(value):
    """KerasTuner choices are scalars: a list value travels as its TOML text."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(v) if not isinstance(v, str) else f'"{v}"' for v in value) + "]"
    return value


def decode(value):
    if isinstance(value, str) and value.startswith("["):
        return parse_value(value)
    return value


def _lookup(recipe_dict: dict, key: str):
    node = recipe_dict
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    if isinstance(node, dict) and "name" in node and len(node) == 1:
        return node["name"]
    return node


def declare(hp, spaces: dict, recipe_dict: dict) -> dict:
    """Declares every space on `hp` (a `keras_tuner.HyperParameters`) and returns the active values.

    Args:
        hp: the trial's hyperparameters.
        spaces: a validated [tune] section (`validate_tune`'s result).
        recipe_dict: the base recipe as a dict; its values are the defaults.

    Returns:
        `{recipe key: value}` for the spaces active in this trial, lists decoded.
    """
    values = {}
    for key in _order(spaces):
        spec = spaces[key]
        current = _lookup(recipe_dict, key)
        with contextlib.ExitStack() as stack:
            for parent, allowed in spec.get("when", {}).items():
                stack.enter_context(hp.conditional_scope(parent, [_encode(v) for v in allowed]))
            value = _declare_one(hp, key, spec, current)
        if value is not None:
            values[key] = decode(value)
    return values


def _declare_one(hp, key, spec, current):
    kind = spec["type"]
    if kind == "choice":
        choices = [_encode(v) for v in spec["values"]]
        default = _encode(current) if _encode(current) in choices else None
        if choices and all(_is_number(c) for c in choices):
            # KerasTuner keeps a choice's type from its first value; ints mixed with floats become floats.
            if any(isinstance(c, float) for c in choices):
                choices = [float(c) for c in choices]
                default = float(default) if default is not None else None
        return hp.Choice(key, choices, default=default)
    if kind == "bool":
        return hp.Boolean(key, default=bool(current) if isinstance(current, bool) else False)
    lo, hi, sampling = spec["min"], spec["max"], spec["sampling"]
    inside = _is_number(current) and lo <= current <= hi
    if kind == "int":
        return hp.Int(key, lo, hi, step=spec.get("step", 1), sampling=sampling,
                      default=int(current) if inside and float(current).is_integer() else None)
    return hp.Float(key, lo, hi, step=spec.get("step"), sampling=sampling,
                    default=float(current) if inside else None)
