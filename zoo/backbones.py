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

import fnmatch
import os
import re

import keras
from keras import ops

from kzoo.errors import UserError
from kzoo.registry import Registry
from kzoo.zoo.registry import MODELS

PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
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
            return super().meta(name)
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
_TABLES: dict[str, tuple] = {}  # application name -> (stem patterns, per-stage patterns)


def _register_application(name, app, preprocess, stem, stages, min_size, description):
    def build(input_shape, weights=None):
        return app(include_top=False, weights=weights, input_shape=tuple(input_shape),
                   name=f"backbone_{name.lower()}")

    build.__name__ = name
    build.__doc__ = description
    shown = " | ".join(",".join(p.strip("^$") for p in group) for group in stages)
    BACKBONES.register(build, name=name, source="keras.applications", preprocess=preprocess,
                       min_size=min_size, stages=f"{len(stages)} ({shown})")
    _TABLES[name] = (tuple(stem), tuple(tuple(s) for s in stages))


_register_application(
    "ResNet50", keras.applications.ResNet50, "caffe", [r"^conv1_", r"^pool1_"],
    [[r"^conv2_"], [r"^conv3_"], [r"^conv4_"], [r"^conv5_"]], 32,
    "ResNet-50 v1 (He et al. 2016), 25.6M parameters with its top; caffe-style BGR mean subtraction.")
_register_application(
    "MobileNetV2", keras.applications.MobileNetV2, "tf", [r"^Conv1", r"^bn_Conv1", r"^expanded_conv_"],
    [[r"^block_1_"], [r"^block_3_"], [r"^block_6_"], [r"^block_13_"]], 32,
    "MobileNetV2 (Sandler et al. 2018), inverted residuals; inputs scaled to [-1, 1].")
_register_application(
    "MobileNetV3Small", keras.applications.MobileNetV3Small, "none",
    [r"^conv$", r"^conv_bn$", r"^expanded_conv_(depthwise|squeeze|project)"],
    [[r"^expanded_conv_1_"], [r"^expanded_conv_3_"], [r"^expanded_conv_8_"]], 32,
    "MobileNetV3-Small (Howard et al. 2019); rescaling built in, takes 0-255 pixels.")
_register_application(
    "EfficientNetB0", keras.applications.EfficientNetB0, "none", [r"^stem_", r"^block1"],
    [[r"^block2"], [r"^block3"], [r"^block4", r"^block5"], [r"^block6", r"^block7", r"^top_"]], 32,
    "EfficientNet-B0 (Tan & Le 2019); normalization built in, takes 0-255 pixels.")
_register_application(
    "ConvNeXtTiny", keras.applications.ConvNeXtTiny, "none", [r"prestem", r"_stem$"],
    [[r"_stage_0_"], [r"_downsampling_block_0", r"_stage_1_"], [r"_downsampling_block_1", r"_stage_2_"],
     [r"_downsampling_block_2", r"_stage_3_"]], 32,
    "ConvNeXt-Tiny (Liu et al. 2022); normalization built in, takes 0-255 pixels.")


def application_for(model_name: str):
    """The registered application a nested model named `backbone_<name>` was built from, or None."""
    if not model_name.startswith("backbone_"):
        return None
    key = model_name[len("backbone_"):]
    for name in _TABLES:
        if name.lower() == key:
            return name
    return None


def stage_patterns(name: str):
    """Compiled (stem, [stage, ...]) regular expressions of a registered application."""
    stem, stages = _TABLES[name]
    return [re.compile(p) for p in stem], [[re.compile(p) for p in s] for s in stages]


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


def build_application(name: str, input_shape, weights="none"):
    """Builds a registered application without its top, named `backbone_<name>`.

    Args:
        name: a registered application (`kzoo list backbones`).
        input_shape: `(height, width, 3)` after preprocessing.
        weights: `imagenet` (downloaded and cached by Keras), a path to a weights file, or `none`.
            Defaults to `"none"`.
    """
    if not BACKBONES.is_application(name):
        BACKBONES.get(name)  # the closest-name error
        raise UserError(f"'{name}' is a zoo model, not a keras.applications backbone. Received: backbone={name!r}")
    builder = BACKBONES.get(name)
    if weights in (None, "", "none"):
        return builder(input_shape, None)
    if weights == "imagenet":
        try:
            return builder(input_shape, "imagenet")
        except Exception as e:  # noqa: BLE001 - Keras raises a plain Exception for a failed fetch
            if "fetch" not in str(e).lower() and "url" not in str(e).lower():
                raise
            raise UserError(
                f"Cannot download the ImageNet weights of {name} (no network?); fetch them where the "
                f"network allows (they land in ~/.keras/models) and pass finetune.weights=PATH to that "
                f"file. Received: weights='imagenet'") from None
    if not os.path.isfile(weights):
        raise UserError(f"No such weights file (expected 'imagenet', 'none' or a path). Received: weights={weights!r}")
    try:
        return builder(input_shape, weights)
    except (ValueError, OSError) as e:
        raise UserError(f"Cannot load {weights} into {name} without its top: {str(e).splitlines()[0]} "
                        f"Received: weights={weights!r}") from None
