"""KerasHub image backbones for fine-tuning: `backbone = "hub:PRESET_OR_DIR"`.

A KerasHub preset (`resnet_50_imagenet`, a `kaggle://` or `hf://` handle, or a local folder
written by `backbone.save_to_preset(DIR)`) becomes the body of a kzoo fine-tuning model:

    input -> [augment_*] -> preprocess_pixels -> preprocess_hub_converter -> <Backbone> -> head_*

`preprocess_pixels` brings the data's pixels to 0-255 and repeats a single channel to RGB;
`preprocess_hub_converter` is the preset's own `ImageConverter` (its resizing and
normalization), or scaling to [0, 1] when the preset has none. The stage groups come from the
backbone's layer names through the family tables below (`kzoo.finetune.model_structure` finds
the nested backbone by its class), so `head`, `topK` and `all` stages and per-group rates work
as for the zoo and `keras.applications` backbones.

KerasHub is an optional extra (`pip install 'kzoo[hub]'`): importing this module never imports
it; only building a `hub:` backbone does. Importing it adds the families' rows to
`kzoo.zoo.backbones.BACKBONES` (`kzoo list backbones`), which never imports this module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
from dataclasses import dataclass

import keras

from kzoo.errors import UserError, closest
from kzoo.zoo.backbones import BACKBONES, HUB_PREFIX, BackbonePreprocess, resolve_weights
from kzoo.zoo.blocks import classifier_head

INSTALL_HINT = "pip install 'kzoo[hub]'"
# Hosts the named presets and handles are fetched from; probed before KerasHub tries (and retries).
_HOSTS = {"kaggle": "api.kaggle.com", "hf": "huggingface.co"}


@dataclass(frozen=True)
class HubFamily:
    """How kzoo groups the layers of one KerasHub backbone class.

    Args:
        backbone: the KerasHub class name, e.g. `"ResNetBackbone"`.
        stem: regular expressions of the layers that open the stem.
        stage: a regular expression whose first group numbers the stage a layer opens; stages
            are numbered in the order of those numbers. Layers matching neither join the group
            of the layer before them.
        example: a named preset of the family.
        description: one line for `kzoo list backbones`.
        expand: regular expressions of layers whose own sublayers are grouped instead of them
            (a ViT's encoder holds its transformer blocks). Defaults to none.
    """

    backbone: str
    stem: tuple
    stage: str
    example: str
    description: str
    expand: tuple = ()

    def layers(self, model):
        """The backbone's layers in order, the `expand` ones replaced by their sublayers."""
        out = []
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if any(re.search(p, layer.name) for p in self.expand):
                out += list(layer._layers)  # sublayers in the order the layer created them
            else:
                out.append(layer)
        return out

    def patterns(self):
        """Compiled `(stem patterns, stage pattern)`."""
        return [re.compile(p) for p in self.stem], re.compile(self.stage)


FAMILIES = {f.backbone: f for f in (
    HubFamily("ResNetBackbone", (r"^conv\d+_", r"^pool\d+_"), r"^stack(\d+)_", "resnet_50_imagenet",
              "KerasHub ResNet v1/v2 (He et al. 2016): conv1_* stem, stack{i}_block{j}_* stages"),
    HubFamily("DenseNetBackbone", (r"^conv1_", r"^pool1"), r"^stack(\d+)_", "densenet_121_imagenet",
              "KerasHub DenseNet (Huang et al. 2017): conv1_* stem, stack{i}_* (+ transition{i}_*) stages"),
    HubFamily("VGGBackbone", (r"^block1_",), r"^block(\d+)_", "vgg_16_imagenet",
              "KerasHub VGG (Simonyan & Zisserman 2015): block1_* stem, block{i}_* stages"),
    HubFamily("EfficientNetBackbone", (r"^stem_",), r"^block(\d+)[a-z]_", "efficientnet_b0_ra_imagenet",
              "KerasHub EfficientNet v1/v2 (Tan & Le 2019, 2021): stem_* stem, block{i}*_ stages (top_* in the last)"),
    HubFamily("MobileNetBackbone", (r"^input_", r"^block_0_"), r"^block_(\d+)_", "mobilenet_v3_small_100_imagenet",
              "KerasHub MobileNetV3 (Howard et al. 2019): input_*, block_0 stem, block_{i}_* stages "
              "(the last: the output convolution)"),
    HubFamily("ViTBackbone", (r"^vit_patching_and_embedding$",), r"^transformer_block_(\d+)$",
              "vit_base_patch16_224_imagenet",
              "KerasHub ViT (Dosovitskiy et al. 2021): patch and position embedding stem, one stage per "
              "transformer block (finetune.layer_decay: BEiT's layer-wise rates)", expand=(r"^vit_encoder$",)),
)}


def is_hub_spec(backbone) -> bool:
    """Whether a `[finetune] backbone` value names a KerasHub preset (`hub:...`)."""
    return isinstance(backbone, str) and backbone.startswith(HUB_PREFIX)


def hub_installed() -> bool:
    """Whether the `hub` extra (keras-hub) is installed, without importing it."""
    return importlib.util.find_spec("keras_hub") is not None


def hub_family(layer):
    """The `HubFamily` of a KerasHub backbone (a nested model in a fine-tuning model), or None.

    Found by class, so it works after `keras.models.load_model` (which imports KerasHub to
    rebuild the backbone) whatever the nested model is called.
    """
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras_hub") and cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return None


def _keras_hub(spec):
    if not hub_installed():
        raise UserError(f"KerasHub backbones need the hub extra: {INSTALL_HINT}. Received: backbone={spec!r}")
    import keras_hub  # the optional extra, and 7.5 s to import: only when a hub: backbone is built

    return keras_hub


def _reachable(host, timeout=3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _family_presets(keras_hub) -> dict:
    """`{preset name: family}` for the named presets of the families kzoo knows."""
    out = {}
    for name, family in FAMILIES.items():
        cls = getattr(keras_hub.models, name, None)
        for preset in getattr(cls, "presets", {}) if cls is not None else {}:
            out[preset] = family
    return out


def _kaggle_cached(handle) -> bool:
    """Whether kagglehub already holds a versioned handle's files (then no network is needed)."""
    try:  # kagglehub comes with the optional hub extra
        from kagglehub.cache import Cache
        from kagglehub.handle import parse_model_handle

        return Cache().load_from_cache(parse_model_handle(handle), "config.json") is not None
    except Exception:  # noqa: BLE001 - kagglehub internals; unknown means "ask the network"
        return False


def resolve_preset(spec: str):
    """Checks a `hub:PRESET_OR_DIR` spec before anything is downloaded or built.

    Returns:
        `(keras_hub module, preset)` where `preset` is what `from_preset` takes.

    Raises:
        UserError: the extra is missing, the folder is not a preset of a family kzoo knows, the
            name is unknown, or its files would have to be downloaded and the host does not
            answer within 3 seconds.
    """
    preset = os.path.expanduser(spec[len(HUB_PREFIX):].strip())
    if not preset:
        raise UserError(f"hub: needs a KerasHub preset name or a preset folder, e.g. hub:resnet_50_imagenet. "
                        f"Received: backbone={spec!r}")
    keras_hub = _keras_hub(spec)
    if os.path.isdir(preset):
        config = os.path.join(preset, "config.json")
        try:
            with open(config, encoding="utf-8") as f:
                class_name = json.load(f).get("class_name", "")
        except (OSError, ValueError):
            raise UserError(f"{preset} is not a KerasHub preset folder (no readable config.json; write one with "
                            f"backbone.save_to_preset(DIR)). Received: backbone={spec!r}") from None
        _check_family(class_name, spec)
        return keras_hub, preset
    scheme = preset.split("://")[0].lower() if "://" in preset else None
    if scheme is None:
        if os.sep in preset or preset.startswith("."):
            raise UserError(f"No such preset folder. Received: backbone={spec!r}")
        from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS  # the names KerasHub knows

        known = _family_presets(keras_hub)
        if preset not in known:
            what = ("not an image backbone of a family kzoo knows" if preset in BUILTIN_PRESETS
                    else "an unknown KerasHub preset")
            raise UserError(f"'{preset}' is {what}.{closest(preset, known)} See `kzoo list backbones`. "
                            f"Received: backbone={spec!r}")
        handle = BUILTIN_PRESETS[preset].get("kaggle_handle", "")
        scheme = handle.split("://")[0].lower() if "://" in handle else None
        if scheme == "kaggle" and _kaggle_cached(handle[len("kaggle://"):]):
            return keras_hub, preset
    host = _HOSTS.get(scheme)
    if host and not _reachable(host):
        raise UserError(f"Cannot download the KerasHub preset '{preset}' ({host} does not answer: no network?); "
                        f"fetch it where the network allows, save it with save_to_preset(DIR) and pass hub:DIR. "
                        f"Received: backbone={spec!r}")
    return keras_hub, preset


def _check_family(class_name, spec):
    if class_name not in FAMILIES:
        raise UserError(f"kzoo has no stage table for KerasHub's {class_name or 'unknown class'} (it knows "
                        f"{', '.join(FAMILIES)}). Received: backbone={spec!r}")


def load_hub_backbone(spec: str):
    """The KerasHub backbone and its image converter (None when the preset has none) for `spec`."""
    keras_hub, preset = resolve_preset(spec)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except Exception as e:  # noqa: BLE001 - KerasHub raises plain errors for network and file trouble
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"Cannot load the KerasHub preset '{preset}': {first} Received: backbone={spec!r}") from None
    if hub_family(backbone) is None:
        _check_family(type(backbone).__name__, spec)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset, name="preprocess_hub_converter")
    except (FileNotFoundError, ValueError):  # a folder written by backbone.save_to_preset alone
        converter = None
    return backbone, converter


def build_hub_finetune_model(spec, input_shape, num_classes, head_dropout=0.0, seed=0, front=(),
                             pixel_max=255.0, weights="none"):
    """A fine-tuning model with a KerasHub backbone as its body and a new kzoo head.

    Args:
        spec: `hub:PRESET_OR_DIR`.
        input_shape: the data's `(height, width, channels)`.
        num_classes: classes of the new head.
        head_dropout: dropout before the head's Dense layer. Defaults to `0.0`.
        seed: seed of the head's initializer and dropout. Defaults to `0`.
        front: layers applied first (the recipe's augmentation). Defaults to none.
        pixel_max: the data's largest pixel value; pixels are scaled to 0-255 from it.
            Defaults to `255.0`.
        weights: `""` or `none` (the default: the preset's own weights); anything else is
            refused, since a preset brings its weights.

    Example:
        >>> model = build_hub_finetune_model("hub:/tmp/resnet_preset", (8, 8, 1), 10)
        >>> kzoo.finetune.model_structure(model).stages  # one group per stack{i}_*
    """
    resolve_weights(spec, weights)  # a preset brings its own: refuses any other
    backbone, converter = load_hub_backbone(spec)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for layer in front:
        x = layer(x)
    channels = backbone.input_shape[-1]
    if channels == 3:  # 0-255 RGB, what KerasHub's converters expect
        x = BackbonePreprocess("none", 255.0 / pixel_max, name="preprocess_pixels")(x)
    else:
        x = keras.layers.Rescaling(255.0 / pixel_max, name="preprocess_pixels")(x)
    if converter is None:
        x = keras.layers.Rescaling(1.0 / 255.0, name="preprocess_hub_converter")(x)
        size = backbone.input_shape[1:3]
        if None not in size and tuple(size) != tuple(x.shape[1:3]):
            x = keras.layers.Resizing(*size, name="preprocess_resize")(x)
    else:
        x = converter(x)
    features = backbone(x)
    if len(features.shape) == 3:  # a transformer's tokens: their mean, as BEiT fine-tunes
        features = keras.layers.GlobalAveragePooling1D(name="head_pool")(features)
    outputs = classifier_head(features, num_classes, dropout=head_dropout, seed=seed)
    return keras.Model(inputs, outputs, name=f"hub_{backbone.name}_finetune")


def list_families() -> list[HubFamily]:
    """The KerasHub families kzoo has stage tables for (empty without the hub extra)."""
    return list(FAMILIES.values()) if hub_installed() else []


def _backbone_rows() -> dict:
    """`kzoo list backbones`' rows: one `hub:<example preset>` per family, when the extra is installed."""
    return {f"{HUB_PREFIX}{f.example}": {"description": f"{f.description}; any {f.backbone} preset or preset folder",
                                         "source": "keras_hub", "stages": f.stage.strip("^")}
            for f in list_families()}


BACKBONES.add_source(_backbone_rows)
