"""Finding, reading and overriding recipes (TOML files; shipped ones are package data)."""

from __future__ import annotations

import fnmatch
import os
from importlib import resources

from kzoo.errors import RecipeError, closest
from kzoo.recipes.schema import Recipe, build_recipe

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib


def _shipped() -> dict[str, object]:
    root = resources.files("kzoo.recipes")
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def list_recipes(pattern: str = "*") -> list[str]:
    """Names of the shipped recipes matching a wildcard pattern."""
    return sorted(n for n in _shipped() if fnmatch.fnmatch(n, pattern))


def read_raw(name_or_path: str) -> tuple[dict, str]:
    """Parses a recipe file or shipped recipe name into a dict; returns it and its source."""
    shipped = _shipped()
    if name_or_path in shipped:
        text, source = shipped[name_or_path].read_text(), f"recipes/{name_or_path}.toml"
    elif os.path.isfile(name_or_path):
        with open(name_or_path, encoding="utf-8") as f:
            text, source = f.read(), name_or_path
    else:
        looks_like_path = os.sep in name_or_path or name_or_path.endswith(".toml")
        if looks_like_path:
            raise RecipeError(f"No such recipe file: {name_or_path}")
        raise RecipeError(
            f"Unknown recipe '{name_or_path}'.{closest(name_or_path, shipped)} See `kzoo list recipes`."
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{source} is not valid TOML: {e}") from None
    if "name" not in raw:
        raw["name"] = os.path.splitext(os.path.basename(name_or_path))[0]
    return raw, source


def parse_value(text: str):
    """Parses an override value as a TOML literal (never evaluated); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides) -> dict:
    """Applies `key.path=value` strings (or a `{path: value}` dict) to a raw recipe dict."""
    if not overrides:
        return raw
    items = overrides.items() if isinstance(overrides, dict) else []
    if not isinstance(overrides, dict):
        parsed = []
        for item in overrides:
            if "=" not in item:
                raise RecipeError(f"--set takes key=value, e.g. optimizer.lr=0.01. Received: {item!r}")
            key, value = item.split("=", 1)
            parsed.append((key.strip(), parse_value(value.strip())))
        items = parsed
    for key, value in items:
        parts = key.split(".")
        if not all(parts):
            raise RecipeError(f"Bad override key {key!r}: use dotted names like model.depth.")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if isinstance(child, str) and part in ("model", "schedule"):
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise RecipeError(f"Cannot set {key}: '{part}' is not a table.")
            node = child
        node[parts[-1]] = value
    return raw


def load(name_or_path: str, overrides=None) -> Recipe:
    """Reads, overrides and validates a recipe.

    Args:
        name_or_path: a shipped recipe name (`kzoo list recipes`) or a TOML file path.
        overrides: `["optimizer.lr=0.01", ...]` or `{"optimizer.lr": 0.01}`. Defaults to none.

    Example:
        >>> recipe = kzoo.recipes.load("mlp-digits", ["model.depth=4"])
        >>> recipe.model["depth"]
        4
    """
    raw, _ = read_raw(name_or_path)
    return build_recipe(apply_overrides(raw, overrides))
