"""Layer-sequential unit-variance (LSUV) initialization for Keras 3 models, nested ones included."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.errors import UserError

# The layers LSUV rescales: those with a `kernel` whose output is a linear map of the input.
LSUV_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv2D,
)


class _Reached(Exception):
    """Raised from inside the forward pass once the layer under study has produced its output
    (Keras re-creates exceptions raised in `call`, so the output travels on the probe)."""


def linear_layers(model) -> list:
    """The Dense/Conv layers of a model in the order a forward pass reaches them, looking
    inside nested models (each layer once, at its first call)."""
    found = []
    for layer in _walk(model):
        if isinstance(layer, LSUV_LAYERS) and layer not in found:
            found.append(layer)
    return found


def _walk(model):
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model) or (hasattr(layer, "layers") and not isinstance(layer, LSUV_LAYERS)):
            yield from _walk(layer)
        else:
            yield layer


class _Probe:
    """Replaces a layer's `call` for one forward pass: the output is captured before the
    layer's own activation (the linear pre-activation), and the pass stops there."""

    def __init__(self, layer):
        self.layer = layer
        self.output = None

    def __enter__(self):
        layer = self.layer
        self._activation = getattr(layer, "activation", None)
        original = type(layer).call

        def call(*args, **kwargs):
            if self._activation is not None:
                layer.activation = keras.activations.linear
            try:
                out = original(layer, *args, **kwargs)
            finally:
                if self._activation is not None:
                    layer.activation = self._activation
            self.output = out
            raise _Reached(layer.name)

        layer.call = call
        return self

    def __exit__(self, *exc):
        try:
            del self.layer.call
        except AttributeError:
            pass
        return False


def layer_output(model, layer, x):
    """The pre-activation output of `layer` (anywhere in `model`) on the batch `x`, as numpy."""
    with _Probe(layer) as probe:
        try:
            model(x, training=False)
        except _Reached:
            pass
    if probe.output is not None:
        return keras.ops.convert_to_numpy(probe.output).astype("float64")
    raise UserError(f"Layer '{layer.name}' was not reached by a forward pass of the model. Received: layer={layer.name}")


def lsuv_init(model, x, tol: float = 0.1, max_iter: int = 10, orthonormal: bool = True, seed: int | None = 0,
              verbose: bool = False) -> dict:
    """Layer-sequential unit-variance initialization (LSUV), in place.

    Step 1 (with `orthonormal`): every Dense/Conv kernel gets an orthonormal initialization.
    Step 2: for each Dense/Conv layer in forward order, its kernel is divided by the standard
    deviation of its output on the batch `x` until |Var(output) - 1| < `tol` or `max_iter`
    passes are done. The output is measured before the layer's own activation, in inference
    mode (batch norm uses its moving statistics), and nested models are searched too.

    Args:
        model: a built Keras model (functional, sequential or subclassed with sub-layers).
        x: a batch of training inputs (numpy array), e.g. 256 examples.
        tol: tolerance on the output variance. Defaults to `0.1`.
        max_iter: at most this many rescalings per layer. Defaults to `10`.
        orthonormal: re-initialize kernels orthonormally first. Defaults to `True`.
        seed: seed of the orthonormal initialization. Defaults to `0`.
        verbose: print each layer's final variance. Defaults to `False`.

    Returns:
        A dict mapping each layer's name to `{"variance": ..., "iterations": ...}`.

    Example:
        >>> model = kzoo.zoo.create_model("mlp_deep", (8, 8, 1), 10, initializer="orthogonal")
        >>> kzoo.zoo.initializers.lsuv_init(model, x_train[:256])

    Reference:
        Mishkin & Matas 2015, "All you need is a good init", https://arxiv.org/abs/1511.06422
    """
    if tol <= 0:
        raise ValueError(f"tol must be positive. Received: tol={tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1. Received: max_iter={max_iter}")
    x = np.asarray(x)
    if not model.built:
        model(x[:1], training=False)
    layers = linear_layers(model)
    if not layers:
        raise UserError(f"lsuv_init found no Dense or Conv layer in the model. Received: model={model.name}")
    report = {}
    for i, layer in enumerate(layers):
        kernel = _kernel(layer)
        if orthonormal:
            init = keras.initializers.Orthogonal(seed=None if seed is None else seed + i)
            kernel.assign(keras.ops.cast(init(kernel.shape, dtype=kernel.dtype), kernel.dtype))
        iterations = 0
        var = float(np.var(layer_output(model, layer, x)))
        while abs(var - 1.0) >= tol and iterations < max_iter and var > 1e-12:
            kernel.assign(kernel.value / keras.ops.cast(np.sqrt(var), kernel.dtype))
            iterations += 1
            var = float(np.var(layer_output(model, layer, x)))
        report[layer.name] = {"variance": var, "iterations": iterations}
        if verbose:
            print(f"lsuv: {layer.name}: variance {var:.4f} after {iterations} rescaling(s)")
    return report


def _kernel(layer):
    kernel = getattr(layer, "depthwise_kernel", None) if isinstance(layer, keras.layers.DepthwiseConv2D) \
        else getattr(layer, "kernel", None)
    if kernel is None:
        raise UserError(f"Layer '{layer.name}' has no kernel to rescale. Received: layer={layer.name}")
    return kernel
