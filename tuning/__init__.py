"""kzoo.tuning: hyperparameter search over recipes with KerasTuner.

`search(recipe, ...)` is what `kzoo tune` runs; spaces come from a recipe's [tune] section
(`kzoo.tuning.spaces`). Submodules load on first use: importing KerasTuner costs time (about
180 modules, 0.1-0.2 s after `import kzoo`), and validating a recipe's [tune] section needs
none of it.
"""

import importlib

from kzoo.recipes.schema import register_section_validator
from kzoo.tuning.spaces import validate_tune

register_section_validator("tune", validate_tune)

_LAZY = {
    "search": "kzoo.tuning.search",
    "SearchResult": "kzoo.tuning.search",
    "KzooTuner": "kzoo.tuning.search",
    "RecipeHyperModel": "kzoo.tuning.hypermodel",
}

__all__ = sorted(_LAZY) + ["validate_tune"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kzoo.tuning' has no attribute {name!r}")
