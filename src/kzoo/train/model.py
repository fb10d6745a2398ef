"""The model a recipe trains: a zoo model with its input layers, or for [finetune] a backbone
(zoo, `keras.applications`, a saved model) with a new head."""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from kzoo.data.framing import framed_sample, framed_shape
from kzoo.data.preprocessing import (
    augmentation_layers,
    fit_preprocessing_layers,
    needs_value_range,
    preprocessing_layers,
    value_range,
)
from kzoo.data.splits import DataSplits
from kzoo.errors import RecipeError, UserError
from kzoo.safe_load import load_model_file, load_weights
from kzoo.zoo import create_model
from kzoo.zoo.backbones import BACKBONES, build_application, input_layers, resolve_weights
from kzoo.zoo.blocks import classifier_head
from kzoo.zoo.hub import build_hub_finetune_model, is_hub_spec
from kzoo.zoo.initializers import lsuv_init

# Standardization and PCA whitening statistics come from at most this many training examples.
STATS_SAMPLE = 10_000


def sample(data, n: int):
    """`(x float32, y)`: the first `n` training examples of a `Splits` or an `ArraySplits`."""
    if hasattr(data, "sample"):
        return data.sample(n)
    return data.x_train[:n].astype("float32"), data.y_train[:n]


def build_model(recipe, data, framing=None):
    """The recipe's model with framing, augmentation and standardization layers inside it, for
    `data` (a `DataSplits` or `ArraySplits`: its `info`, and a bounded sample for the statistics
    and LSUV). The statistics are those of the framed sample; the model takes raw inputs."""
    info = data.info
    shape = framed_shape(info.input_shape, framing)
    layers = ([framing] if framing is not None else []) + augmentation(recipe, shape, data, framing)
    layers += statistics_layers(recipe, data, framing)
    kwargs = {k: v for k, v in recipe.model.items() if k != "name"}
    try:
        model = create_model(recipe.model["name"], info.input_shape, info.num_classes, layers,
                             seed=recipe.seed, **kwargs)
    except ValueError as e:
        raise RecipeError(f"model: {e}") from None
    lsuv_if_asked(model, recipe, data)
    return model


def statistics_layers(recipe, data, framing=None) -> list:
    """The standardization (and PCA whitening) layers, fitted on a bounded sample of the framed
    training examples: read in batches for a streamed source, so memory stays flat in its size."""
    d = recipe.data
    if isinstance(data, DataSplits):
        return fit_preprocessing_layers(data, d.standardize, d.pca_whiten, STATS_SAMPLE, framing=framing)
    return preprocessing_layers(framed_sample(sample(data, STATS_SAMPLE)[0], framing), d.standardize, d.pca_whiten)


def framed_peak(data, framing=None, n: int = STATS_SAMPLE) -> float:
    """The largest framed pixel among the first `n` training examples (255 when all are 0),
    read 512 at a time."""
    peak = 0.0
    for start in range(0, min(int(n), int(data.info.num_train)), 512):
        stop = min(start + 512, int(n))
        if isinstance(data, DataSplits):
            x = data.arrays_of("train", start, stop)[0]
        else:
            x = data.x_train[start:stop].astype("float32")
        peak = max(peak, float(np.max(framed_sample(x, framing))))
    return peak or 255.0


def augmentation(recipe, input_shape, data=None, framing=None) -> list:
    """The recipe's [data.augment] layers; a policy, erasing and color jitter get the value range
    of the first 256 framed training examples of `data` (they sit before standardization)."""
    a = recipe.data.augment
    span = (0.0, 255.0)
    if data is not None and needs_value_range(a.policy, a.erasing, a.color_jitter):
        span = value_range(framed_sample(sample(data, 256)[0], framing))
    return augmentation_layers(input_shape, a.flip, a.translation, a.rotation, a.zoom, a.crop, seed=recipe.seed,
                               policy=a.policy, policy_magnitude=a.policy_magnitude, erasing=a.erasing,
                               color_jitter=a.color_jitter, value_range=span)


def lsuv_if_asked(model, recipe, data):
    """With `model.initializer = "lsuv"` the model was built orthonormal; LSUV then rescales each
    Dense/Conv layer to unit output variance on a training batch (Mishkin & Matas 2015)."""
    spec = recipe.model.get("initializer")
    if (spec.get("name") if isinstance(spec, dict) else spec) == "lsuv":
        lsuv_init(model, sample(data, 256)[0], seed=recipe.seed)


# --- Fine-tuning: a backbone and a new head --------------------------------------------------
def _with_head(body, input_shape, front, num_classes, dropout, seed, name):
    """One model: `front` layers, then `body`, then a new head."""
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for layer in front:
        x = layer(x)
    return keras.Model(inputs, classifier_head(body(x), num_classes, dropout=dropout, seed=seed), name=name)


def replace_head(model, num_classes, input_shape=None, dropout=0.0, front=(), seed=0, name=None, raw_shape=None):
    """A new model: `front` layers, `model` up to its head (nested as `backbone`), a new head.

    The head is every layer from the first `head_*` layer on (zoo models name it so).
    `input_shape` is what `model` receives (after `front`), `raw_shape` what the new model
    takes (before a `Framing` among `front`). Defaults to `input_shape`.
    """
    first = next((lyr for lyr in model.layers if lyr.name.startswith("head_")), None)
    if first is None:
        raise UserError(f"The backbone has no head_* layers to replace. Received: model={model.name!r}")
    expected = tuple(model.input_shape[1:])
    if input_shape is not None and tuple(input_shape) != expected:
        raise UserError(f"The backbone takes inputs of shape {expected}; bring the data to it with "
                        f"finetune.resize / finetune.pad or data.image_size. Received: input_shape={tuple(input_shape)}")
    features = keras.Model(model.inputs, first.input, name="backbone")
    return _with_head(features, raw_shape or input_shape or expected, front, num_classes, dropout, seed,
                      name or f"{model.name}_finetune")


def build_finetune_model(recipe, data, pretrained=None, trust_model: bool = False, framing=None):
    """The model a [finetune] section describes, for the target data in `data`: a zoo model (the
    [model] for `backbone = ""`) with `weights` a `.weights.h5` or `none` (the default); a
    `keras.applications` backbone (`weights` `imagenet`, the default, a file or `none`) or a
    `hub:` preset (its own weights) with a new head; or a `model.keras`
    (a run directory, or `pretrained` from [finetune.pretrain]) up to its head, with a new one.
    `framing` (a `kzoo.zoo.layers.Framing`) goes first, so the model takes the raw inputs.
    A model file holding code is refused unless `trust_model`."""
    ft, info, seed = recipe.finetune, data.info, recipe.seed
    backbone, raw = ft.backbone, info.input_shape
    shape = framed_shape(raw, framing)
    front = ([framing] if framing is not None else []) + augmentation(recipe, shape, data, framing)

    if is_hub_spec(backbone):  # a KerasHub preset: before the path test (hub:DIR holds a path)
        return build_hub_finetune_model(backbone, raw, info.num_classes, ft.head_dropout, seed, front,
                                        framed_peak(data, framing), ft.weights)
    if pretrained is not None or backbone.endswith(".keras") or os.path.isdir(backbone) or os.sep in backbone:
        if resolve_weights(backbone, ft.weights) != "none":  # a saved model brings its weights
            raise UserError(f"A saved model starts from its own weights; leave finetune.weights unset. "
                            f"Received: weights={ft.weights!r}")
        source = pretrained if pretrained is not None else load_model_file(backbone, trust_model=trust_model)
        return replace_head(source, info.num_classes, shape, ft.head_dropout, front, seed, raw_shape=raw)
    if backbone and BACKBONES.is_application(backbone):
        pre, app_shape = input_layers(backbone, shape, framed_peak(data, framing, 256))
        app = build_application(backbone, app_shape, ft.weights)
        return _with_head(app, raw, front + pre, info.num_classes, ft.head_dropout, seed,
                          f"{backbone.lower()}_finetune")
    if backbone:
        BACKBONES.get(backbone)  # unknown name: the closest-name error
        recipe = dataclasses.replace(recipe, model={"name": backbone})
    weights = resolve_weights(backbone, ft.weights)  # no ImageNet weights here: refused
    model = build_model(recipe, data, framing)
    return model if weights == "none" else load_weights(model, weights)

