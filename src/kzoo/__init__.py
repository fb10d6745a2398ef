"""kzoo: a Keras 3 / TensorFlow model zoo and recipe runner.

Importing `kzoo` registers its Keras objects, so saved models load with
`keras.models.load_model` afterwards.
"""

import os as _os

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kzoo.quiet_import import import_tensorflow as _import_tensorflow  # noqa: E402

_import_tensorflow()  # before Keras, which imports TensorFlow too

__version__ = "0.1.0"

from kzoo import (  # noqa: E402
    callbacks,  # noqa: E402,F401
    data,  # noqa: E402,F401
    finetune,  # noqa: E402,F401
    optimizers,  # noqa: E402,F401  (registers kzoo's optimizers for loading saved models)
    recipes,  # noqa: E402,F401
    train,  # noqa: E402,F401
    tuning,  # noqa: E402,F401  (registers the recipe schema's [tune] validator; KerasTuner loads lazily)
    zoo,  # noqa: E402,F401  (registers models, layers, activations, initializers)
)
from kzoo.errors import DataError, RecipeError, RunDirError, UserError  # noqa: E402
from kzoo.prediction import predict  # noqa: E402  (the module is `prediction`, so `kzoo.predict` stays this)

__all__ = ["DataError", "RecipeError", "RunDirError", "UserError", "callbacks", "data", "finetune", "optimizers",
           "predict", "recipes", "train", "tuning", "zoo"]
