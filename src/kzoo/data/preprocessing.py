"""Preprocessing and augmentation as Keras layers inside the model, so a saved model carries
them and serves raw inputs."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.errors import RecipeError

STANDARDIZE = ("per_channel", "zero_center", "scale", "none")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")


def preprocessing_layers(x_train, standardize="per_channel", pca_whiten=False):
    """Layers that standardize inputs with statistics of the training split only.

    Args:
        x_train: training inputs (numpy), the only data the statistics come from.
        standardize: `per_channel` (zero mean, unit variance per channel), `zero_center`
            (subtract the per-channel mean), `scale` (divide by the largest value) or `none`.
        pca_whiten: follow with PCA whitening of the flattened input (for MLPs).
    """
    if standardize not in STANDARDIZE:
        raise RecipeError(f"data.standardize must be one of {', '.join(STANDARDIZE)}. Received: {standardize!r}")
    x = np.asarray(x_train, dtype="float64")
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    layers = []
    if standardize == "per_channel":
        var = np.maximum(x.var(axis=axes), 1e-12)
        layers.append(keras.layers.Normalization(axis=-1, mean=mean, variance=var, name="preprocess_standardize"))
    elif standardize == "zero_center":
        layers.append(keras.layers.Normalization(axis=-1, mean=mean, variance=np.ones_like(mean), name="preprocess_center"))
    elif standardize == "scale":
        layers.append(keras.layers.Rescaling(1.0 / float(max(np.abs(x).max(), 1e-12)), name="preprocess_scale"))
    if pca_whiten:
        from kzoo.zoo.layers import PCAWhitening

        whiten = PCAWhitening(name="preprocess_pca_whiten")
        scaled = x
        for layer in layers:
            scaled = np.asarray(layer(scaled.astype("float32")))
        whiten.adapt(scaled)
        layers.append(whiten)
    return layers


def augmentation_layers(input_shape, flip="none", translation=0.0, rotation=0.0, zoom=0.0, crop=0, seed=0):
    """Random augmentation layers (active only in training), from the recipe's [data.augment].

    Each is wrapped in `TrainingOnly`, so it acts only when called with `training=True`.

    Args:
        flip: `none`, `horizontal`, `vertical` or `horizontal_and_vertical`.
        translation: largest shift as a fraction of height and width.
        rotation: largest rotation as a fraction of a full turn.
        zoom: largest zoom in or out as a fraction.
        crop: pad by this many pixels and crop back at random (He et al. 2016's CIFAR recipe).
    """
    if flip not in FLIPS:
        raise RecipeError(f"data.augment.flip must be one of {', '.join(FLIPS)}. Received: {flip!r}")
    for key, value in (("translation", translation), ("rotation", rotation), ("zoom", zoom)):
        if not 0 <= value < 1:
            raise RecipeError(f"data.augment.{key} must be in [0, 1). Received: {key}={value}")
    if crop < 0:
        raise RecipeError(f"data.augment.crop must be >= 0. Received: crop={crop}")
    wanted = flip != "none" or translation or rotation or zoom or crop
    if wanted and len(input_shape) != 3:
        raise RecipeError(f"data.augment needs image inputs (H, W, C). Received: input_shape={tuple(input_shape)}")
    from kzoo.zoo.blocks import layer_seed

    layers = []
    if crop:
        # Pad-and-crop is a whole-pixel shift of up to `crop` pixels with zero fill; Keras's
        # RandomCrop would rescale the padded image at inference, so shift instead.
        h, w = input_shape[0], input_shape[1]
        layers.append(keras.layers.RandomTranslation(
            crop / h, crop / w, fill_mode="constant", interpolation="nearest", seed=layer_seed(seed, "augment_crop"), name="augment_crop"))
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=layer_seed(seed, "augment_flip"), name="augment_flip"))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation, fill_mode="constant", seed=layer_seed(seed, "augment_translate"), name="augment_translate"))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="constant", seed=layer_seed(seed, "augment_rotate"), name="augment_rotate"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=layer_seed(seed, "augment_zoom"), name="augment_zoom"))
    return [_training_only(layer) for layer in layers]


def _training_only(layer):
    """Wraps an augmentation layer so a plain `model(x)` never augments (only `fit` does)."""
    from kzoo.zoo.layers import TrainingOnly

    name = layer.name
    layer.name = f"{name}_op"
    return TrainingOnly(layer, name=name)
