"""kzoo.recipes: named training recipes (TOML), their schema, and the runner."""

from kzoo.recipes.loader import apply_overrides, list_recipes, load
from kzoo.recipes.runner import run
from kzoo.recipes.schema import Recipe, build_recipe

__all__ = ["Recipe", "apply_overrides", "build_recipe", "list_recipes", "load", "run"]
