"""Seeds and the determinism / XLA settings of a compiled train step."""

from __future__ import annotations

import keras


def seed_everything(seed: int, deterministic: bool = True):
    """Seeds Python, numpy and TensorFlow; with `deterministic`, makes TF ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def jit_compile_for(recipe, model, setup=None):
    """The `jit_compile` a model is compiled with on this recipe's path."""
    return recipe.jit_compile
