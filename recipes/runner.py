"""`kzoo.recipes.run`: a recipe into a run folder, through the training engine (`kzoo.train`)."""

from __future__ import annotations

import os
import shutil

import keras

from kzoo.recipes.loader import load
from kzoo.runs import RunDir, default_out
from kzoo.train.engine import RunResult, train

__all__ = ["RunResult", "run"]


def run(recipe, out: str | None = None, overwrite: bool = False, verbose: int = 2, trust_model: bool = False) -> RunResult:
    """Trains a recipe, evaluates it on the held-out test split and writes the run directory.

    Args:
        recipe: a `Recipe`, or a shipped name / TOML path passed to `kzoo.recipes.load`.
        out: the run directory. Defaults to `runs/<recipe>-<timestamp>`.
        overwrite: replace an earlier run's artifacts in `out`. Defaults to `False`.
        verbose: Keras's fit verbosity (0 silent, 2 one line per epoch). Defaults to `2`.
        trust_model: load a backbone model file even if it holds code. Defaults to `False`.

    Returns:
        A `RunResult`: the metrics (as in `metrics.json`), the directory, the rows, the model.

    Example:
        >>> result = kzoo.recipes.run("mlp-digits", out="runs/try")
        >>> result.metrics["test_accuracy"]
    """
    if isinstance(recipe, str):
        recipe = load(recipe)
    out = out or default_out(recipe.name)
    created = not os.path.exists(out)
    # resume=True: an unfinished run of the same recipe in `out` continues from its checkpoint.
    run_dir = RunDir(out, overwrite=overwrite, resume=True)
    policy = keras.config.dtype_policy()  # a mixed-precision recipe sets the global one
    try:
        with run_dir:
            run_dir.check_same_recipe(recipe.to_toml())
            return train(recipe, run_dir, verbose, trust_model=trust_model)
    except BaseException:
        if created and os.path.isdir(out) and set(os.listdir(out)) <= {"recipe.toml"}:
            shutil.rmtree(out)  # leave nothing behind for a run that never started
        raise
    finally:
        keras.config.set_dtype_policy(policy)
