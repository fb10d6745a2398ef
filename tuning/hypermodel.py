"""A KerasTuner HyperModel over a recipe: each trial is the recipe with the trial's values set.

The model, its data and its training come from the same functions `kzoo run` uses
(`kzoo.recipes.runner.build_model`, `compile_model`, `kzoo.data.load`), in the same order and
with the same seeds, so `kzoo run` on an exported trial reproduces its validation score.
"""

from __future__ import annotations

import copy
import math

import keras_tuner

from kzoo.errors import UserError


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
        from kzoo.tuning.spaces import declare

        return declare(hp, self.spaces, self.base)

    def trial_recipe(self, hp):
        """The recipe a trial's values describe (Hyperband's epoch budget included)."""
        from kzoo.recipes.loader import apply_overrides
        from kzoo.recipes.schema import build_recipe

        values = self.declare_hyperparameters(hp)
        raw = copy.deepcopy(self.base)
        epochs = hp.values.get("tuner/epochs")
        if epochs:
            values["epochs"] = int(epochs)
        try:
            return build_recipe(apply_overrides(raw, values)), values
        except UserError as e:
            raise TrialFailed(f"bad combination: {e}") from None

    def build(self, hp):
        from kzoo import data as kdata
        from kzoo.recipes.runner import build_model, seed_everything
        from kzoo.tuning.strategy import global_batch_size

        recipe, values = self.trial_recipe(hp)
        seed_everything(recipe.seed, recipe.deterministic)
        d = recipe.data
        batch_size = global_batch_size(recipe, self.strategy) if self.strategy is not None else d.batch_size
        splits = kdata.load(d.dataset, batch_size, d.data_dir or None, d.validation_split, d.test_split,
                            d.split_seed, recipe.seed, d.image_size or None, d.cache, d.shuffle_buffer,
                            d.eval_batch_size or None)
        try:
            model = build_model(recipe, splits.arrays)
        except UserError as e:
            raise TrialFailed(f"bad combination: {e}") from None
        self._trial = (recipe, splits, batch_size)
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """Compiles and trains the model `build` returned, in the order `kzoo run` does (same
        per-epoch shuffles, same per-epoch dropout seeds); raises `TrialFailed` on a NaN loss."""
        import contextlib

        import keras
        import numpy as np

        from kzoo.callbacks import LearningRateLogger, RunContext, build_callbacks
        from kzoo.data.core import make_epoch_dataset
        from kzoo.recipes.runner import compile_model, resolve_steps_per_execution
        from kzoo.runs import _resume_classes

        recipe, splits, batch_size = self._trial
        self._trial = None  # hold no datasets between trials
        arrays, d = splits.arrays, recipe.data
        steps = math.ceil(arrays.info.num_train / batch_size)
        probe_n = min(len(arrays.x_train), 256)
        context = RunContext(recipe=recipe, out_dir=self.trial_dir, steps_per_epoch=steps,
                             probe=(arrays.x_train[:probe_n].astype("float32"), arrays.y_train[:probe_n]))
        all_callbacks = [LearningRateLogger()] + build_callbacks(recipe.callbacks, context)
        train = make_epoch_dataset(arrays.x_train, arrays.y_train, batch_size, recipe.seed, recipe.epochs, 0,
                                   d.shuffle_buffer)
        # `kzoo run` reseeds dropout and augmentation each epoch (no backup here: a trial that
        # is interrupted runs again from scratch)
        all_callbacks += [_resume_classes()["EpochReseed"]()]
        all_callbacks += list(callbacks or []) + [keras.callbacks.TerminateOnNaN()]
        with self.strategy.scope() if self.strategy is not None else contextlib.nullcontext():
            compile_model(model, recipe, steps,
                          resolve_steps_per_execution(recipe, steps, all_callbacks, self.strategy))
        history = model.fit(train, validation_data=splits.val, epochs=recipe.epochs, steps_per_epoch=steps,
                            shuffle=False, callbacks=all_callbacks, verbose=self.verbose)
        losses = history.history.get("loss", [])
        if not losses or not np.isfinite(losses[-1]):
            raise TrialFailed(f"loss became NaN or inf at epoch {len(losses)}")
        return history
