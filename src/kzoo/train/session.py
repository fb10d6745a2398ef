"""The run object: one recipe's set-up, performed once and in one order for every path (a run,
its pretraining and scratch baseline, a tuner trial, the learning-rate finder), and the data-only
variant `kzoo eval`, `kzoo export` and `kzoo predict` rebuild a finished run's data with."""

from __future__ import annotations

import dataclasses

from kzoo.callbacks import LearningRateLogger, RunContext, build_callbacks
from kzoo.callbacks.registry import with_always_on
from kzoo.cpu_threads import apply_threads
from kzoo.data.core import DataSpec, open_splits
from kzoo.data.framing import SAMPLE_SIZE, frame, framing_layer
from kzoo.train.determinism import seed_everything
from kzoo.train.distribution import decide
from kzoo.train.loop import steps_per_epoch
from kzoo.train.model import build_finetune_model, build_model

PROBE = 256  # examples in the fixed batch the monitors read


class Session:
    """One recipe's run set-up, in nanoGPT's order: decide (devices, precision, batch size),
    seed, open the data (one `DataSpec`, one `DataSplits`), and, on `build`, seed again and
    build the model in the strategy's scope. Whatever ran in between (pretraining, a scratch
    baseline) the model starts from the same weights.

    Fine-tuning's framing (pixel scale, resize, pad) becomes the model's first layer, so the
    data stay as the user has them and every saved model takes raw inputs.

    Args:
        recipe: the validated `Recipe`.
        strategy: a `tf.distribute.Strategy` to run under. Defaults to the recipe's choice.
        cache_dir: where `data.cache = "disk"` may write (the run folder). Defaults to none.
        dataset: read this dataset instead of the recipe's (pretraining), unframed.
        setup: a `Setup` decided already (pretraining shares its run's). Defaults to deciding.

    Example:
        >>> session = Session(kzoo.recipes.load("cnn-digits"))
        >>> model = session.build()
        >>> session.data.info.input_shape, model.input_shape
        ((8, 8, 1), (None, 8, 8, 1))
    """

    def __init__(self, recipe, strategy=None, cache_dir=None, dataset=None, setup=None):
        self.recipe = recipe
        self.threads = apply_threads(recipe)  # before anything starts TensorFlow's runtime
        self.setup = setup if setup is not None else decide(recipe, strategy)
        seed_everything(recipe.seed, recipe.deterministic)
        changes = {"image_size": None} if dataset else {}
        self.spec = DataSpec.from_recipe(recipe, self.setup.batch_size, dataset, cache_dir=cache_dir, **changes)
        data = open_splits(self.spec)
        ft = recipe.finetune
        self._framing = None
        if ft.stages and dataset is None:
            peak = data.peak(SAMPLE_SIZE) if ft.pixel_max else None  # before the few labels are chosen
            self._framing = framing_layer(ft, peak)
            data = frame(data, ft, self.spec.split_seed)
        self.data = data

    def framing(self):
        """A fresh `Framing` layer for a model's front, or `None` when the recipe frames nothing."""
        if self._framing is None:
            return None
        return type(self._framing).from_config(self._framing.get_config())

    def build(self, recipe=None, pretrained=None, trust_model: bool = False):
        """The model of `recipe` (the session's unless given: the scratch baseline's and
        pretraining's variants), seeded first and built in the strategy's scope."""
        recipe = recipe or self.recipe
        seed_everything(recipe.seed, recipe.deterministic)
        with self.setup.scope():
            if recipe.finetune.stages:
                return build_finetune_model(recipe, self.data, pretrained, trust_model, framing=self.framing())
            return build_model(recipe, self.data, framing=self.framing())

    def callbacks(self, out_dir, first=(), recipe=None):
        """`(factory, made)`: `factory()` builds a stage's callbacks afresh for `fit_plan`
        (`first`, a `LearningRateLogger`, then the recipe's, which may write into `out_dir`);
        `made` holds the last list built."""
        recipe = recipe or self.recipe
        context = RunContext(recipe=recipe, out_dir=out_dir,
                             steps_per_epoch=steps_per_epoch(recipe, self.data, self.setup),
                             probe=self.data.sample(PROBE))
        made = []

        def factory():
            made[:] = [LearningRateLogger(), *first] + build_callbacks(with_always_on(recipe.callbacks), context)
            return made

        return factory, made

    def replaced(self, **changes):
        """The session's recipe with `changes` (dataclass fields) applied."""
        return dataclasses.replace(self.recipe, **changes)


class RunData:
    """The data-only variant of a `Session` for a finished run: its recipe (from `recipe.toml`)
    and its dataset rebuilt from the recipe's one `DataSpec`, read without any cache, for
    `kzoo eval`, `kzoo export` and `kzoo predict`. The model takes these inputs as they are:
    everything training did to them is inside it.

    Args:
        recipe: the run's `Recipe` (`kzoo.evaluate.load_run` reads it from `recipe.toml`).
        dataset: read this dataset with the recipe's split settings instead. Defaults to none.
    """

    def __init__(self, recipe, dataset: str | None = None):
        self.recipe = recipe
        self.spec = DataSpec.from_recipe(recipe, dataset=dataset, cache="none")
        self.data = open_splits(self.spec)

    @property
    def info(self):
        return self.data.info
