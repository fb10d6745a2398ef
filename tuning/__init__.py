"""kzoo.tuning: hyperparameter search over recipes with KerasTuner.

`search(recipe, ...)` is what `kzoo tune` runs; spaces come from a recipe's [tune] section
(`kzoo.tuning.spaces`). Submodules load on first use: importing KerasTuner costs time, and
validating a recipe's [tune] section needs none of it.
"""

import importlib

_LAZY = {
    "search": "kzoo.tuning.search",
    "SearchResult": "kzoo.tuning.search",
    "KzooTuner": "kzoo.tuning.search",
    "RecipeHyperModel": "kzoo.tuning.hypermodel",
    "make_strategy": "kzoo.tuning.strategy",
    "validate_tune": "kzoo.tuning.spaces",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kzoo.tuning' has no attribute {name!r}")
