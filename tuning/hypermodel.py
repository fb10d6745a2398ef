"""A KerasTuner HyperModel over a recipe: each trial is the recipe with the trial's values set.
Data, model and training come from the engine `kzoo run` uses, in the same order and with the
same seeds, so `kzoo run` on an exported trial reproduces its score, staged recipes included.
"""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np

from kzoo.callbacks.registry import end_of_run
from kzoo.errors import UserError
from kzoo.recipes.loader import apply_overrides
from kzoo.recipes.schema import build_recipe
from kzoo.train import Session, fit_plan
from kzoo.tuning.spaces import declare


class TrialFailed(keras_tuner.errors.FailedTrialError):
    """A trial that cannot give a score (NaN loss, a bad combination): recorded, not retried."""


class RecipeHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial of a recipe's [tune] space.

    Args:
        recipe: the validated base `Recipe`; its [tune] section is the space.
        strategy: a `tf.distribute.Strategy` the trials run under (for batch scaling).
            Defaults to `None` (one device).
        verbose: Keras's fit verbosity inside a trial. Defaults to `0`.

    Example:
        >>> hypermodel = RecipeHyperModel(kzoo.recipes.load("mlp-digits"))
        >>> model = hypermodel.build(keras_tuner.HyperParameters())
    """

    def __init__(self, recipe, strategy=None, verbose: int = 0):
        super().__init__(name=recipe.name)
        self.recipe = recipe
        self.base = recipe.to_dict()
        self.spaces = recipe.tune
        self.strategy = strategy
        self.verbose = verbose
        self.trial_dir = None  # set by the tuner before each trial; callbacks may write there
        self._trial = None

    def declare_hyperparameters(self, hp):
        return declare(hp, self.spaces, self.base)

    def trial_recipe(self, hp):
        """The recipe a trial's values describe (Hyperband's epoch budget included)."""
        values = self.declare_hyperparameters(hp)
        raw = self.recipe.to_dict()
        epochs = hp.values.get("tuner/epochs")
        if epochs:
            values["epochs"] = int(epochs)
        seed = hp.values.get("kzoo/seed")  # a confirmation trial: the same values, another seed
        if seed is not None:
            values["seed"] = int(seed)
        try:
            return build_recipe(apply_overrides(raw, values)), values
        except UserError as e:
            raise TrialFailed(f"bad combination: {e}") from None

    def build(self, hp):
        """The trial's data and model, from the engine (`kzoo.train`) as `kzoo run` builds them."""
        recipe, values = self.trial_recipe(hp)
        session = Session(recipe, self.strategy)
        try:
            model = session.build()
        except UserError as e:
            raise TrialFailed(f"bad combination: {e}") from None
        self._trial = session
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """Trains the model `build` returned through the engine's loop, as `kzoo run` would but with
        no checkpoints (an interrupted trial runs again); raises `TrialFailed` on a NaN loss."""
        session, self._trial = self._trial, None  # hold no datasets between trials
        factory, made = session.callbacks(self.trial_dir)
        extra = list(callbacks or [])
        try:
            result = fit_plan(model, session.recipe, session.data, session.setup, None, factory,
                              extra=extra + [keras.callbacks.TerminateOnNaN()], verbose=self.verbose)
            losses = [row.get("loss") for row in result.rows]
            if not losses or not np.isfinite(losses[-1]):
                raise TrialFailed(f"loss became NaN or inf at epoch {len(losses)}")
        except Exception:
            end_of_run(made, "failed")
            raise
        end_of_run(made, "pruned" if any(getattr(cb, "pruned", 0) for cb in extra) else "completed")
        return result.history()
