"""Weight initializers by name (Glorot, He, LeCun, orthogonal, small Gaussian, LSUV), falling
back to Keras's own names.

`lsuv` is data dependent: the model is built with orthonormal kernels, then
`lsuv_init(model, x)` rescales them on a training batch (the recipe runner does this when
`model.initializer = "lsuv"`).

Reference:
    Glorot & Bengio 2010; He et al. 2015 (https://arxiv.org/abs/1502.01852);
    LeCun et al. 1998 "Efficient BackProp"; Saxe et al. 2013 (orthogonal);
    Mishkin & Matas 2015 (LSUV, https://arxiv.org/abs/1511.06422).
"""

from __future__ import annotations

import keras

from kzoo.errors import UserError
from kzoo.registry import Registry
from kzoo.zoo.lsuv import lsuv_init  # noqa: F401  (public here: kzoo.zoo.initializers.lsuv_init)

INITIALIZERS = Registry("initializer")


def register_initializer(fn=None, **meta):
    """Registers `fn(seed=None, **kwargs) -> keras.initializers.Initializer`."""
    return INITIALIZERS.register(fn, **meta)


def _keras(key, cls, doc, data_dependent=False, **fixed):
    def make(seed=None, **kwargs):
        return cls(seed=seed, **{**fixed, **kwargs})

    make.__name__ = key
    make.__doc__ = doc
    meta = {"data_dependent": True} if data_dependent else {}
    INITIALIZERS.register(make, name=key, **meta)


_keras("glorot_normal", keras.initializers.GlorotNormal, "Glorot normal: var = 2 / (fan_in + fan_out).")
_keras("glorot_uniform", keras.initializers.GlorotUniform, "Glorot uniform: var = 2 / (fan_in + fan_out).")
_keras("he_normal", keras.initializers.HeNormal, "He normal: var = 2 / fan_in, for ReLU.")
_keras("he_uniform", keras.initializers.HeUniform, "He uniform: var = 2 / fan_in, for ReLU.")
_keras("lecun_normal", keras.initializers.LecunNormal, "LeCun normal: var = 1 / fan_in, for SELU.")
_keras("lecun_uniform", keras.initializers.LecunUniform, "LeCun uniform: var = 1 / fan_in.")
_keras("orthogonal", keras.initializers.Orthogonal, "Random orthogonal matrix (Saxe et al. 2013).")
_keras("small_normal", keras.initializers.RandomNormal, "N(0, 0.01^2): the lectures' too-small init.", stddev=0.01)
_keras("zeros", lambda seed=None, **kw: keras.initializers.Zeros(), "All zeros.")
_keras("lsuv", keras.initializers.Orthogonal,
       "LSUV: orthonormal, then unit output variance on a data batch (Mishkin & Matas 2015).",
       data_dependent=True)


def get(spec="glorot_uniform", seed=None):
    """Returns an initializer for a registered name, a `{name = ...}` table, or a Keras name."""
    if isinstance(spec, keras.initializers.Initializer):
        return spec
    kwargs = {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        spec = kwargs.pop("name", None)
    if spec in INITIALIZERS:
        return INITIALIZERS.get(spec)(seed=seed, **kwargs)
    try:
        return keras.initializers.get(spec if not kwargs else {"class_name": spec, "config": kwargs})
    except (ValueError, TypeError):
        INITIALIZERS.get(spec)  # raises the UserError with the closest names
        raise UserError(f"Unknown initializer '{spec}'.") from None


def list_initializers(pattern="*"):
    return INITIALIZERS.list(pattern)
