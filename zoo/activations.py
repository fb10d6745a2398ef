"""Activations by name: Keras's own, plus the ones Keras lacks (registered under kzoo.zoo.layers).

`get(spec)` takes a name (`"relu"`) or a table (`{name = "leaky_relu", negative_slope = 0.2}`)
and returns a fresh Keras layer, so each use in a model is a named layer. Names not registered
here fall back to Keras's own activation functions.
"""

from __future__ import annotations

import keras

from kzoo.errors import UserError
from kzoo.registry import Registry
from kzoo.zoo.layers import Maxout, RReLU

ACTIVATIONS = Registry("activation")


def register_activation(fn=None, **meta):
    """Registers `fn(name=None, **kwargs) -> keras.layers.Layer` as an activation."""
    return ACTIVATIONS.register(fn, **meta)


def _plain(key, doc):
    def make(name=None, **kwargs):
        if kwargs:
            raise UserError(f"Activation '{key}' takes no arguments. Received: {kwargs}")
        return keras.layers.Activation(key, name=name)

    make.__name__ = key
    make.__doc__ = doc
    ACTIVATIONS.register(make, name=key)


for _key, _doc in {
    "linear": "Identity.",
    "sigmoid": "Logistic sigmoid; saturates and is not zero-centred.",
    "tanh": "Hyperbolic tangent; zero-centred but saturates.",
    "relu": "Rectified linear unit max(0, x) (Nair & Hinton 2010).",
    "relu6": "ReLU clipped at 6.",
    "elu": "Exponential linear unit (Clevert et al. 2015).",
    "selu": "Scaled ELU, self-normalizing with lecun_normal init (Klambauer et al. 2017).",
    "gelu": "Gaussian error linear unit (Hendrycks & Gimpel 2016).",
    "swish": "x * sigmoid(x) (Ramachandran et al. 2017).",
    "silu": "Same as swish.",
    "softplus": "log(1 + exp(x)), a smooth ReLU.",
    "mish": "x * tanh(softplus(x)) (Misra 2019).",
}.items():
    _plain(_key, _doc)


@register_activation
def leaky_relu(name=None, negative_slope: float = 0.01):
    """Leaky ReLU: slope `negative_slope` for x < 0 (Maas et al. 2013)."""
    return keras.layers.LeakyReLU(negative_slope=negative_slope, name=name)


@register_activation
def prelu(name=None):
    """Parametric ReLU with a learned slope per channel (He et al. 2015)."""
    return keras.layers.PReLU(shared_axes=None, name=name)


@register_activation(width_factor="num_pieces")
def maxout(name=None, num_pieces: int = 2):
    """Maxout: max over `num_pieces` linear pieces per unit (Goodfellow et al. 2013)."""
    return Maxout(num_pieces=num_pieces, name=name)


@register_activation
def rrelu(name=None, lower: float = 1.0 / 8.0, upper: float = 1.0 / 3.0, seed: int | None = None):
    """Randomized leaky ReLU: leak ~ U(lower, upper) in training, the mean at test (Xu et al. 2015)."""
    return RReLU(lower=lower, upper=upper, seed=seed, name=name)


def spec_name(spec) -> str:
    """The activation name of a name or a `{name = ...}` table."""
    return spec.get("name") if isinstance(spec, dict) else spec


def width_factor(spec) -> int:
    """How many linear outputs an activation consumes per unit: `num_pieces` for maxout, else 1.

    `dense_unit` and `conv_unit` multiply the width of their linear layer by it, so a unit
    keeps its width whatever the activation.
    """
    key = spec_name(spec)
    if key not in ACTIVATIONS or "width_factor" not in ACTIVATIONS.meta(key):
        return 1
    arg = ACTIVATIONS.meta(key)["width_factor"]
    if isinstance(spec, dict) and arg in spec:
        return int(spec[arg])
    return int(ACTIVATIONS.parameters(key)[arg].default)


def exists(name) -> bool:
    """True if `name` is registered here or is one of Keras's activation functions."""
    if name in ACTIVATIONS:
        return True
    try:
        keras.activations.get(name)
        return isinstance(name, str)
    except (ValueError, TypeError):
        return False


def get(spec="relu", name=None):
    """Returns a new activation layer for a name or a `{name = ..., **kwargs}` table.

    Names not registered here fall back to Keras's own activation functions
    (`keras.activations.get`), wrapped in a `keras.layers.Activation` layer.

    Example:
        >>> get("relu"), get({"name": "maxout", "num_pieces": 3}), get("hard_sigmoid")
    """
    if isinstance(spec, keras.layers.Layer):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        key = spec.pop("name", None)
        if key is None:
            raise UserError(f"An activation table needs a 'name'. Received: {spec}")
    else:
        key, spec = spec, {}
    if key not in ACTIVATIONS and not spec and exists(key):
        return keras.layers.Activation(key, name=name)
    builder = ACTIVATIONS.get(key)
    try:
        return builder(name=name, **spec)
    except TypeError as e:
        raise UserError(f"Bad arguments for activation '{key}': {e}") from None


def list_activations(pattern="*"):
    return ACTIVATIONS.list(pattern)
