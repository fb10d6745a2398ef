"""Preprocessing and augmentation as Keras layers inside the model, so a saved model carries
them and serves raw inputs."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.errors import RecipeError
from kzoo.zoo.blocks import layer_seed
from kzoo.zoo.layers import AugMix, PCAWhitening, RandAugment, TrainingOnly

STANDARDIZE = ("per_channel", "zero_center", "scale", "none")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
POLICIES = ("none", "randaugment", "augmix")


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
        whiten = PCAWhitening(name="preprocess_pca_whiten")
        scaled = x
        for layer in layers:
            scaled = np.asarray(layer(scaled.astype("float32")))
        whiten.adapt(scaled)
        layers.append(whiten)
    return layers


STATISTICS_EXAMPLES = 10000
STATISTICS_BYTES = 256 << 20
STREAMED_SAMPLE_BYTES = 16 << 20  # a streamed source's exact sample: bounded, whatever its size


def fit_preprocessing_layers(splits, standardize="per_channel", pca_whiten=False,
                             max_examples: int = STATISTICS_EXAMPLES, max_bytes: int | None = None, framing=None):
    """`preprocessing_layers` fitted on a bounded sample: the first `max_examples` training
    examples of any `DataSplits`, never the whole split in memory.

    When that sample fits `max_bytes` as float64, this is exactly
    `preprocessing_layers(splits.sample(max_examples)[0], ...)` (so small datasets get the same
    layers as before). Larger samples (224x224 photos: 10,000 of them are 12 GB as float64)
    are read in batches: per-channel mean and variance and the largest value are accumulated
    in float64; PCA whitening is fitted on as many first examples as `max_bytes` holds.

    Args:
        splits: what `kzoo.data.load` returned.
        standardize, pca_whiten: as in `preprocessing_layers`.
        max_examples: examples the statistics come from. Defaults to `10000`.
        max_bytes: float64 bytes a sample may take in memory. Defaults to 256 MiB for an
            in-memory source and 16 MiB for a streamed one (whose peak memory must not grow with
            the number of files).
        framing: a `kzoo.zoo.layers.Framing` the statistics are taken after (fine-tuning's
            framing, the model's first layer). Defaults to none.
    """
    if standardize not in STANDARDIZE:
        raise RecipeError(f"data.standardize must be one of {', '.join(STANDARDIZE)}. Received: {standardize!r}")
    if standardize == "none" and not pca_whiten:
        return []  # nothing to fit: read nothing
    if max_bytes is None:
        max_bytes = STATISTICS_BYTES if splits.in_memory else STREAMED_SAMPLE_BYTES
    shape = tuple(splits.info.input_shape)
    if framing is not None:
        shape = tuple(framing.compute_output_shape((None, *shape))[1:])
    n = min(int(max_examples), int(splits.info.num_train))
    per_example = 8 * int(np.prod(shape))

    def examples(start, stop):
        x = splits.arrays_of("train", start, stop)[0]
        return x if framing is None else np.asarray(framing(x), "float32")

    if n * per_example <= max_bytes:
        return preprocessing_layers(examples(0, n), standardize, pca_whiten)
    count, total, squares, peak = 0, 0.0, 0.0, 0.0
    for start in range(0, n, 512):  # the first n examples, 512 at a time
        x = np.asarray(examples(start, min(start + 512, n)), dtype="float64")
        axes = tuple(range(x.ndim - 1))
        count += int(np.prod([x.shape[a] for a in axes]))
        total = total + x.sum(axis=axes)
        squares = squares + np.square(x).sum(axis=axes)
        peak = max(peak, float(np.abs(x).max()))
    mean = total / count
    layers = []
    if standardize == "per_channel":
        var = np.maximum(squares / count - mean**2, 1e-12)
        layers.append(keras.layers.Normalization(axis=-1, mean=mean, variance=var, name="preprocess_standardize"))
    elif standardize == "zero_center":
        layers.append(keras.layers.Normalization(axis=-1, mean=mean, variance=np.ones_like(mean), name="preprocess_center"))
    elif standardize == "scale":
        layers.append(keras.layers.Rescaling(1.0 / max(peak, 1e-12), name="preprocess_scale"))
    if pca_whiten:
        scaled = examples(0, min(n, max(max_bytes // per_example, 2)))
        for layer in layers:
            scaled = np.asarray(layer(scaled))
        whiten = PCAWhitening(name="preprocess_pca_whiten")
        whiten.adapt(scaled)
        layers.append(whiten)
    return layers


def augmentation_layers(input_shape, flip="none", translation=0.0, rotation=0.0, zoom=0.0, crop=0, seed=0,
                        policy="none", policy_magnitude=5.0, erasing=0.0, color_jitter=0.0, value_range=(0.0, 255.0)):
    """Random augmentation layers (active only in training), from the recipe's [data.augment].

    Each is wrapped in `TrainingOnly`, so it acts only when called with `training=True`. They
    sit before standardization, on the raw (framed) inputs, so `value_range` is the range of
    those: 0-16 for scikit-learn's digits, 0-255 for image files. Every layer has its own seed
    from `seed` (`layer_seed`). In order: crop, flip, translation, rotation, zoom, the policy,
    color jitter, erasing.

    The policy's `policy_magnitude` is on timm's 0-10 scale (`rand-m9`, `augmix-m3`), with
    timm's strengths (`kzoo.zoo.layers.image_ops`: rotation up to 30 degrees at 10, so 15 at 5,
    shear 0.3, translation 0.45 of the image, ...). RandAugment is kzoo's `RandAugment` (2
    operations per image, the paper's N, each at the fixed level with a random sign, applied
    with probability 0.5 as in timm); AugMix is kzoo's `AugMix` (3 chains of 1-3 operations,
    Dirichlet(1) and Beta(1, 1) weights, the paper's defaults; each operation's level uniform
    in [0, magnitude]). Both draw every choice per image from their seed generator inside the
    graph, so a compiled step draws anew at each batch and kzoo's per-epoch reseeding
    (`kzoo.runs.EpochReseed`) makes a resumed run draw the same. Neither compiles with XLA
    (their affine transform uses `ImageProjectiveTransformV3`; `supports_jit = False`), so the
    engine trains a model with one without XLA (`kzoo.train.determinism.plan_step`).

    `color_jitter = s` shifts brightness by up to `s` of the value range and scales contrast by a
    factor in `[1 - s, 1 + s]` (Keras's `RandomColorJitter`); saturation and hue are left out: they
    need 3 channels, and Keras's saturation returned values far below the value range
    (-66 for 0-255 inputs). `erasing = p` erases one box of 2-33 % of the image, filled with
    noise, with probability `p` per image (Keras's `factor=(p, p)`: a single `factor` would draw
    the probability from `[0, p]`).

    Args:
        input_shape: one example's shape; the augmentations need images `(H, W, C)`.
        flip: `none`, `horizontal`, `vertical` or `horizontal_and_vertical`. Defaults to `"none"`.
        translation: largest shift as a fraction of height and width. Defaults to `0.0`.
        rotation: largest rotation as a fraction of a full turn. Defaults to `0.0`.
        zoom: largest zoom in or out as a fraction. Defaults to `0.0`.
        crop: pad by this many pixels and crop back at random (He et al. 2016's CIFAR recipe).
            Defaults to `0`.
        seed: the recipe's seed. Defaults to `0`.
        policy: `none`, `randaugment` or `augmix`. Defaults to `"none"`.
        policy_magnitude: the policy's strength in [0, 10]. Defaults to `5.0`.
        erasing: the probability of erasing a box, in [0, 1]. Defaults to `0.0`.
        color_jitter: brightness and contrast strength in [0, 1]. Defaults to `0.0`.
        value_range: `(low, high)` of the inputs these layers receive. Defaults to `(0, 255)`.

    Reference:
        Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced search
        space", NeurIPS 2020 (https://arxiv.org/abs/1909.13719); Hendrycks et al., "AugMix: A
        Simple Data Processing Method to Improve Robustness and Uncertainty", ICLR 2020
        (https://arxiv.org/abs/1912.02781); Zhong et al., "Random Erasing Data Augmentation",
        AAAI 2020 (https://arxiv.org/abs/1708.04896).
    """
    if flip not in FLIPS:
        raise RecipeError(f"data.augment.flip must be one of {', '.join(FLIPS)}. Received: {flip!r}")
    if policy not in POLICIES:
        raise RecipeError(f"data.augment.policy must be one of {', '.join(POLICIES)}. Received: policy={policy!r}")
    for key, value in (("translation", translation), ("rotation", rotation), ("zoom", zoom)):
        if not 0 <= value < 1:
            raise RecipeError(f"data.augment.{key} must be in [0, 1). Received: {key}={value}")
    for key, value in (("erasing", erasing), ("color_jitter", color_jitter)):
        if not 0 <= value <= 1:
            raise RecipeError(f"data.augment.{key} must be in [0, 1]. Received: {key}={value}")
    if not 0 <= policy_magnitude <= 10:
        raise RecipeError(f"data.augment.policy_magnitude must be in [0, 10]. Received: policy_magnitude={policy_magnitude}")
    if crop < 0:
        raise RecipeError(f"data.augment.crop must be >= 0. Received: crop={crop}")
    wanted = flip != "none" or translation or rotation or zoom or crop or policy != "none" or erasing or color_jitter
    if wanted and len(input_shape) != 3:
        raise RecipeError(f"data.augment needs image inputs (H, W, C). Received: input_shape={tuple(input_shape)}")
    value_range = tuple(float(v) for v in value_range)
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
    if policy == "randaugment":
        layers.append(RandAugment(value_range, num_ops=2, magnitude=float(policy_magnitude),
                                  seed=layer_seed(seed, "augment_randaugment"), name="augment_randaugment"))
    elif policy == "augmix":
        layers.append(AugMix(value_range, magnitude=float(policy_magnitude), width=3, depth=3, alpha=1.0,
                             seed=layer_seed(seed, "augment_augmix"), name="augment_augmix"))
    if color_jitter:
        layers.append(keras.layers.RandomColorJitter(
            value_range, brightness_factor=float(color_jitter), contrast_factor=float(color_jitter),
            seed=layer_seed(seed, "augment_color_jitter"), name="augment_color_jitter"))
    if erasing:
        layers.append(keras.layers.RandomErasing(
            factor=(float(erasing), float(erasing)), value_range=value_range,
            seed=layer_seed(seed, "augment_erasing"), name="augment_erasing"))
    return [_training_only(layer) for layer in layers]


def needs_value_range(policy="none", erasing=0.0, color_jitter=0.0) -> bool:
    """Whether the augmentation layers these settings ask for need the inputs' value range."""
    return policy != "none" or bool(erasing) or bool(color_jitter)


def value_range(x) -> tuple:
    """`(low, high)` of a sample of inputs `x` (numpy) for the augmentation layers: 0 or the
    smallest value if negative, and the largest value (255 when the sample has none above `low`)."""
    x = np.asarray(x, dtype="float32")
    low = min(0.0, float(x.min())) if x.size else 0.0
    high = float(x.max()) if x.size else 255.0
    return low, (high if high > low else 255.0)


def _training_only(layer):
    """Wraps an augmentation layer so a plain `model(x)` never augments (only `fit` does)."""
    name = layer.name
    layer.name = f"{name}_op"
    return TrainingOnly(layer, name=name)
