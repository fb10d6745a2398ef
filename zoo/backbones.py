"""Backbones for transfer learning: the zoo's own models and a registry of `keras.applications`
models, each with its stage structure and the input preprocessing it expects.

A `keras.applications` backbone is built without its top (`include_top=False`) and named
`backbone_<name>` (lower case), e.g. `backbone_mobilenetv2`; that name is how
`kzoo.finetune.model_structure` finds its stage table again after `keras.models.load_model`.

A stage table lists regular expressions over the application's layer names: `stem` and each
entry of `stages` name the layers that open that group; layers matching none (activations,
padding, a final convolution) join the group of the layer before them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import inspect
import io
import math
import os
import re
import warnings

import keras
import numpy as np
from keras import ops

from kzoo.errors import UserError
from kzoo.registry import Registry
from kzoo.zoo.registry import MODELS

PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
HUB_PREFIX = "hub:"  # a `[finetune] backbone` naming a KerasHub preset (kzoo.zoo.hub)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class BackboneRegistry(Registry):
    """Registered `keras.applications` backbones; `list`, `meta` and `get` also show the zoo's
    own models (`kzoo list models`), which serve as backbones from scratch or from a saved run,
    and the rows of the sources that add themselves with `add_source` (`kzoo.zoo.hub`: with the
    `hub` extra installed, one `hub:<example preset>` row per KerasHub family kzoo has a stage
    table for). A source registers itself because it sits above this module: it builds on its
    preprocessing layers."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self._sources = []

    def add_source(self, rows):
        """Adds the rows `rows()` returns (`{name: meta}`, asked for on every `list` and `meta`)."""
        self._sources.append(rows)

    def _zoo(self):
        return MODELS

    def _extra(self) -> dict:
        return {name: meta for rows in self._sources for name, meta in rows().items()}

    def list(self, pattern="*"):
        extra = [n for n in self._extra() if fnmatch.fnmatch(n, pattern)] if isinstance(pattern, str) else []
        return sorted(set(super().list(pattern)) | set(self._zoo().list(pattern))) + sorted(extra)

    def __contains__(self, name):
        return super().__contains__(name) or name in self._zoo()

    def is_application(self, name) -> bool:
        return super().__contains__(name)

    def meta(self, name):
        if self.is_application(name):
            meta = super().meta(name)
            builder = applications()[name]  # measured on first use: probing builds TensorFlow ops,
            meta.setdefault("preprocess", _preprocess_mode(builder))  # which must not run at import
            meta.setdefault("min_size", _min_size(builder))  # (a strategy set up later needs a fresh runtime)
            return meta
        extra = self._extra().get(name)
        if extra is not None:
            return dict(extra)
        meta = self._zoo().meta(name)
        return {"description": meta["description"], "source": "kzoo zoo",
                "stages": "stage{i}_* (stem_*, head_*)"}

    def get(self, name):
        if self.is_application(name) or name not in self._zoo():
            return super().get(name)
        return self._zoo().get(name)


BACKBONES = BackboneRegistry("backbone")
# Hand-written stage tables, only where the derived split (`derive_groups`) is not the usual one:
# application name -> (stem patterns, per-stage patterns).
_TABLES: dict[str, tuple] = {}
_PROBE = np.array([[[[10.0, 100.0, 200.0]]]], dtype="float32")


def applications() -> dict:
    """`{name: builder}` for every model builder `keras.applications` exports (its CamelCase
    functions: ResNet50, MobileNetV2, EfficientNetB0, ... about 40)."""
    return {n: getattr(keras.applications, n) for n in dir(keras.applications)
            if n[:1].isupper() and inspect.isfunction(getattr(keras.applications, n))}


@functools.lru_cache(maxsize=None)
def _preprocess_mode(builder) -> str:
    """The input normalization an application's `preprocess_input` applies, read by running it on
    one pixel and comparing with each mode of `BackbonePreprocess` (`none`: the model normalizes
    inside, so `preprocess_input` passes pixels through)."""
    module = getattr(keras.applications, builder.__module__.rsplit(".", 1)[-1], None)
    got = np.asarray(module.preprocess_input(_PROBE.copy()))
    for mode in PREPROCESS_MODES:
        if np.allclose(got, np.asarray(BackbonePreprocess(mode, dtype="float32")(_PROBE)), atol=1e-3):
            return mode
    raise ValueError(f"Unknown preprocessing of {builder.__name__}. Received: preprocess_input={got.ravel()}")


@functools.lru_cache(maxsize=None)
def _min_size(builder) -> int:
    """The smallest input side an application accepts without its top, from its own check."""
    try:
        builder(include_top=False, weights=None, input_shape=(1, 1, 3))
    except ValueError as e:
        m = re.search(r"at least (\d+)x", str(e))
        if m:
            return int(m.group(1))
        raise
    return 1


def _register_application(name, builder):
    def build(input_shape, weights=None):
        # Named afterwards: EfficientNetV2 reads its `name` argument as its variant.
        model = builder(include_top=False, weights=weights, input_shape=tuple(input_shape))
        model.name = f"backbone_{name.lower()}"
        return model

    doc = (inspect.getdoc(builder) or "").splitlines()
    build.__name__ = name
    build.__doc__ = f"keras.applications.{name}: " + (doc[0] if doc else name)
    stages = "stem + one per halving of the resolution (strides 4, 8, 16, 32), derived from the built model"
    if name in _TABLES:
        shown = " | ".join(",".join(p.strip("^$") for p in group) for group in _TABLES[name][1])
        stages = f"{len(_TABLES[name][1])} ({shown})"
    BACKBONES.register(build, name=name, source="keras.applications", weights="imagenet", stages=stages)


def application_for(model_name: str):
    """The registered application a nested model named `backbone_<name>` was built from, or None."""
    if not model_name.startswith("backbone_"):
        return None
    key = model_name[len("backbone_"):]
    for name in BACKBONES.list():
        if BACKBONES.is_application(name) and name.lower() == key:
            return name
    return None


def stage_patterns(name: str):
    """Compiled (stem, [stage, ...]) regular expressions of an application with a hand-written
    table, or None where its groups are derived (`derive_groups`)."""
    if name not in _TABLES:
        return None
    stem, stages = _TABLES[name]
    return [re.compile(p) for p in stem], [[re.compile(p) for p in s] for s in stages]


def _snake(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _block_key(layer):
    """The block a layer belongs to by its name: the first number in it (`conv3_block1_1_conv`:
    3, `block_13_expand`: 13, `block2a_dwconv`: 2), else its first word (`stem_conv`: stem).
    None for a name Keras made up (`conv2d_7`, `re_lu_3`): such layers join their neighbours."""
    if re.fullmatch(re.escape(_snake(type(layer).__name__)) + r"(_\d+)?", layer.name):
        return None
    m = re.search(r"\d+", layer.name)
    return m.group(0) if m else layer.name.split("_")[0]


def _side(tensors, unpadded=None):
    """The largest feature-map side among `tensors` (None for none), each as it was before any
    zero padding (`unpadded`: `{id(tensor): side}`)."""
    sides = [(unpadded or {}).get(id(t), int(t.shape[1])) for t in keras.tree.flatten(tensors)
             if len(t.shape) == 4 and t.shape[1] is not None]
    return max(sides) if sides else None


def derive_groups(model) -> list:
    """`(layer, group)` for each layer of an application built without its top, `group` being
    `("stem", 0)` or `("stage", i)`: one stage per halving of the feature map's side, the stem
    holding what runs at strides 1 and 2.

    A halving is a layer whose output side is at most half its input's (plus one, for valid
    padding) on the current resolution (branches still at the previous one, such as a reduction
    block's second path, do not count again; global pooling never does). A halving opens its
    stage at the start of its block (the layers with the same first number in their name), or
    after its block when it closes it (a block's pooling, a transition) or when its block began
    the stage before (ResNetV2 halves in a stage's last block).

    Reference:
        Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017 (stages as the
        runs of layers at one output stride).
    """
    layers = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    keys = [_block_key(lyr) for lyr in layers]
    current, events, unpadded = None, [], {}
    for i, layer in enumerate(layers):
        if "GlobalPooling" in "".join(c.__name__ for c in type(layer).__mro__):
            continue
        side_in, side_out = _side(layer.input, unpadded), _side(layer.output)
        if side_in is None or side_out is None:
            continue
        if isinstance(layer, keras.layers.ZeroPadding2D):  # a padded map keeps its resolution
            unpadded[id(layer.output)] = side_in
            continue
        current = side_in if current is None else current
        if side_in > current:
            continue  # a branch still at an earlier resolution
        if 2 * side_out <= side_in + 2 and side_out < side_in:
            events.append((i, max(1, round(math.log2(side_in / side_out)))))
        current = side_out if side_out != side_in else current
    openers, previous = [], 0
    for e, halvings in events:
        start = _opener(keys, e, previous, first=not openers)
        openers += [start] * halvings
        previous = start
    levels = [sum(o <= i for o in openers) for i in range(len(layers))]
    stage_levels = sorted({lv for lv in levels if lv >= 2})
    index = {lv: i for i, lv in enumerate(stage_levels)}
    return [(lyr, ("stem", 0) if lv < 2 else ("stage", index[lv])) for lyr, lv in zip(layers, levels)]


def _opener(keys, e, previous, first=False):
    """Where the stage that the halving at layer `e` starts begins (see `derive_groups`)."""
    key = keys[e]
    if key is None:
        return e
    later = next((k for k in keys[e + 1:] if k is not None), None)
    if later != key:
        return e + 1  # the halving closes its block
    i = e
    while i - 1 >= previous and keys[i - 1] in (key, None):
        i -= 1
    while keys[i] is None:
        i += 1
    if i > previous or first:  # the first halving ends the stem, whatever opens it
        return i
    # The block began the stage before: the next block opens this one.
    return next((j for j in range(e + 1, len(keys)) if keys[j] not in (key, None)), len(keys))


@keras.saving.register_keras_serializable(package="kzoo")
class BackbonePreprocess(keras.layers.Layer):
    """Turns raw pixels into what a pretrained backbone expects: scales them to 0-255, repeats a
    single channel to RGB, then applies the backbone's ImageNet normalization.

    Args:
        mode: `caffe` (RGB to BGR, subtract the ImageNet mean), `tf` (scale to [-1, 1]), `torch`
            (scale to [0, 1], standardize with the ImageNet mean and std) or `none` (the backbone
            normalizes inside). Defaults to `"none"`.
        scale: factor bringing the data's pixels to 0-255 (`255 / max pixel`). Defaults to `1.0`.
    """

    def __init__(self, mode="none", scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"mode must be one of {', '.join(PREPROCESS_MODES)}. Received: mode={mode!r}")
        if scale <= 0:
            raise ValueError(f"scale must be positive. Received: scale={scale}")
        self.mode = mode
        self.scale = float(scale)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype) * self.scale
        if x.shape[-1] == 1:
            x = ops.concatenate([x, x, x], axis=-1)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        elif self.mode == "tf":
            x = x / 127.5 - 1.0
        elif self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD, dtype=x.dtype)
            x = (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "scale": self.scale}


def input_layers(name: str, input_shape, pixel_max: float):
    """The preprocessing layers an application backbone needs in front of it, and the shape it
    then receives: resizing up to its smallest input size, then `BackbonePreprocess`."""
    meta = BACKBONES.meta(name)
    h, w = int(input_shape[0]), int(input_shape[1])
    layers = []
    size = meta["min_size"]
    if h < size or w < size:
        h, w = max(h, size), max(w, size)
        layers.append(keras.layers.Resizing(h, w, name="preprocess_resize"))
    layers.append(BackbonePreprocess(meta["preprocess"], 255.0 / pixel_max, name="preprocess_backbone"))
    return layers, (h, w, 3)


def resolve_weights(backbone: str, weights: str) -> str:
    """The weights a `[finetune]` backbone starts from: `weights` as given, or for `""` (the
    default) `imagenet` for a `keras.applications` backbone and `none` for anything else (a
    zoo model, the recipe's [model], a saved model, which have no ImageNet weights; a KerasHub
    `hub:` preset, which brings its own).

    Raises:
        UserError: `imagenet` for a backbone that has no ImageNet weights, or any weights for a
            KerasHub preset.
    """
    weights = str(weights or "").strip()
    if str(backbone).startswith(HUB_PREFIX):
        if weights not in ("", "none"):
            raise UserError(f"A KerasHub preset brings its own weights; leave finetune.weights unset (or 'none'). "
                            f"Received: weights={weights!r}")
        return "none"
    if backbone and BACKBONES.is_application(backbone):
        return weights or "imagenet"
    if weights == "imagenet":
        what = f"'{backbone}'" if backbone else "the recipe's [model]"
        raise UserError(f"Only keras.applications backbones have ImageNet weights (kzoo list backbones); {what} "
                        f"starts from 'none', a .weights.h5 file or a saved run. Received: weights='imagenet'")
    return weights or "none"


def _pass_on(said, caught):
    print(said.getvalue(), end="")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def build_application(name: str, input_shape, weights=""):
    """Builds a registered application without its top, named `backbone_<name>`.

    Args:
        name: a registered application (`kzoo list backbones`).
        input_shape: `(height, width, 3)` after preprocessing.
        weights: `imagenet` (from Keras's cache, `~/.keras/models` or `$KERAS_HOME/models`, else
            downloaded into it), a path to a weights file, or `none`. Defaults to `""`: imagenet.
    """
    if not BACKBONES.is_application(name):
        BACKBONES.get(name)  # the closest-name error
        raise UserError(f"'{name}' is a zoo model, not a keras.applications backbone. Received: backbone={name!r}")
    builder = BACKBONES.get(name)
    weights = resolve_weights(name, weights)
    if weights == "none":
        return builder(input_shape, None)
    if weights == "imagenet":
        # Keras's "Downloading data from ..." and its input-size warning are passed on only when
        # the fetch works: a failed one is the one line below.
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = builder(input_shape, "imagenet")
            _pass_on(said, caught)
            return model
        except Exception as e:  # noqa: BLE001 - Keras raises a plain Exception for a failed fetch
            if "fetch" not in str(e).lower() and "url" not in str(e).lower():
                _pass_on(said, caught)
                raise
            raise UserError(
                f"Cannot download the ImageNet weights of {name} (no network?): pass --weights none (random "
                f"weights) or --weights FILE (a weights file; in a recipe finetune.weights), or fetch them where the "
                f"network allows into ~/.keras/models. Received: weights='imagenet'") from None
    if not os.path.isfile(weights):
        raise UserError(f"No such weights file (expected 'imagenet', 'none' or a path). Received: weights={weights!r}")
    try:
        return builder(input_shape, weights)
    except (ValueError, OSError) as e:
        raise UserError(f"Cannot load {weights} into {name} without its top: {str(e).splitlines()[0]} "
                        f"Received: weights={weights!r}") from None


# Registered last: reading each application's preprocessing runs `BackbonePreprocess`.
for _name, _builder in sorted(applications().items()):
    _register_application(_name, _builder)
