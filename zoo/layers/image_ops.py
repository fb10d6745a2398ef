"""The image operations of kzoo's RandAugment and AugMix, on timm's 0-10 magnitude scale, and
the base layer both share.

Every operation takes a batch of images scaled to [0, 1] and, per image, a level `v` in [0, 1]
(timm's magnitude divided by 10) and a sign `s` (+1 or -1). The strengths at `v = 1` are
timm's (`timm/data/auto_augment.py`, its increasing-severity variants): rotation 30 degrees,
shear 0.3, translation 0.45 of the image size, posterization to `4 - floor(4 v)` bits,
solarization above `1 - v`, colour, contrast, brightness and sharpness factors `1 + 0.9 s v`,
and `110 v` of 255 added below mid-grey by `solarize_add`.

An operation is chosen per image and per position inside the graph: the five geometric ones
become one affine transform per position (`keras.ops.image.affine_transform`), and each pixel
operation is computed for the batch and selected with `where`, so a compiled step draws new
operations at every batch.

Reference:
    Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced search
    space", https://arxiv.org/abs/1909.13719; Hendrycks et al. 2020, "AugMix",
    https://arxiv.org/abs/1912.02781; timm's `auto_augment.py` for the strengths.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
ROTATE_DEGREES, SHEAR, TRANSLATE, ENHANCE, SOLARIZE_ADD = 30.0, 0.3, 0.45, 0.9, 110.0
# ITU-R 601-2 luma, as PIL's convert("L") that timm's colour and contrast operations use.
_LUMA = (0.299, 0.587, 0.114)


def _per_image(t):
    return ops.reshape(t, (-1, 1, 1, 1))


def _levels(x):
    """The 8-bit level (0-255, as a float) of each value, as PIL's operations see an image. The
    1/512 keeps values half-way between two levels (8 of 16 on digits' scale) off the rounding
    boundary, so a last-bit difference between an eager and a compiled step cannot flip them."""
    return ops.clip(ops.floor(x * 255.0 + (0.5 + 1.0 / 512.0)), 0.0, 255.0)


def _gray(x):
    if x.shape[-1] == 3:
        return ops.sum(x * ops.convert_to_tensor(_LUMA, x.dtype), axis=-1, keepdims=True)
    return ops.mean(x, axis=-1, keepdims=True)


def _blend(degenerate, x, factor):
    return ops.clip(degenerate + _per_image(factor) * (x - degenerate), 0.0, 1.0)


def autocontrast(x, v, s):
    low = ops.min(x, axis=(1, 2), keepdims=True)
    high = ops.max(x, axis=(1, 2), keepdims=True)
    span = high - low
    return ops.where(span > 0, (x - low) / ops.maximum(span, 1e-12), x)


def equalize(x, v, s):
    """Histogram equalization of each channel over 256 levels (PIL's `ImageOps.equalize` with
    the cumulative-distribution formula of Keras's `Equalization`), batched with a sort instead
    of a histogram per image."""
    b, h, w, c = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2], x.shape[-1]
    q = ops.cast(_levels(x), "int32")
    rows = ops.reshape(ops.transpose(q, (0, 3, 1, 2)), (b * c, h * w))
    levels = ops.broadcast_to(ops.arange(256, dtype="int32")[None, :], (b * c, 256))
    cdf = tf.searchsorted(tf.sort(rows, axis=-1), levels, side="right")  # pixels <= each level
    cdf_min = ops.min(ops.where(cdf > 0, cdf, h * w), axis=-1, keepdims=True)
    denominator = h * w - cdf_min
    lut = ops.round(ops.cast(cdf - cdf_min, "float32") * 255.0 / ops.cast(ops.maximum(denominator, 1), "float32"))
    out = tf.gather(ops.clip(lut, 0.0, 255.0) / 255.0, rows, batch_dims=1)
    out = ops.where(denominator > 0, out, ops.cast(rows, "float32") / 255.0)  # a flat channel stays
    return ops.transpose(ops.reshape(out, (b, c, h, w)), (0, 2, 3, 1))


def invert(x, v, s):
    return 1.0 - x


def posterize(x, v, s):
    shift = 8.0 - (4.0 - ops.floor(4.0 * v))  # bits dropped: 4 at v = 0, 8 (all) at v = 1
    step = _per_image(ops.power(2.0, shift))
    return ops.floor(_levels(x) / step) * step / 255.0


def solarize(x, v, s):
    return ops.where(_levels(x) >= _per_image(256.0 * (1.0 - v)), 1.0 - x, x)


def solarize_add(x, v, s):
    added = ops.clip(x + _per_image(ops.floor(SOLARIZE_ADD * v) / 255.0), 0.0, 1.0)
    return ops.where(_levels(x) < 128.0, added, x)


def color(x, v, s):
    return _blend(_gray(x), x, 1.0 + ENHANCE * s * v)


def contrast(x, v, s):
    mean = ops.mean(_gray(x), axis=(1, 2, 3), keepdims=True)
    return _blend(mean, x, 1.0 + ENHANCE * s * v)


def brightness(x, v, s):
    return _blend(ops.zeros_like(x), x, 1.0 + ENHANCE * s * v)


def sharpness(x, v, s):
    """Blends with PIL's SMOOTH filter (3x3, centre weight 5 of 13); the border stays as it is."""
    c = x.shape[-1]
    kernel = ops.convert_to_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], "float32") / 13.0
    kernel = ops.tile(kernel[:, :, None, None], (1, 1, c, 1))
    inner = tf.nn.depthwise_conv2d(x, kernel, strides=(1, 1, 1, 1), padding="VALID")
    padding = ((0, 0), (1, 1), (1, 1), (0, 0))
    mask = ops.pad(ops.ones_like(inner), padding)
    smooth = mask * ops.pad(inner, padding) + (1.0 - mask) * x
    return _blend(smooth, x, 1.0 + ENHANCE * s * v)


PIXEL_OPS = {"autocontrast": autocontrast, "equalize": equalize, "invert": invert, "posterize": posterize,
             "solarize": solarize, "solarize_add": solarize_add, "color": color, "contrast": contrast,
             "brightness": brightness, "sharpness": sharpness}
OPS = (*PIXEL_OPS, *GEOMETRIC)


def _affine(x, names, k, v, s):
    """One affine transform per image: the geometric operation its index `k` names (identity
    for the others), about the image's centre, filled with 0 (the value range's low end)."""
    h, w = ops.cast(ops.shape(x)[1], "float32"), ops.cast(ops.shape(x)[2], "float32")
    one, zero = ops.ones_like(v), ops.zeros_like(v)
    a0, a1, b0, b1, tx, ty = one, zero, zero, one, zero, zero
    for i, name in enumerate(names):
        if name not in GEOMETRIC:
            continue
        pick = ops.equal(k, i)
        if name == "rotate":
            angle = s * v * (ROTATE_DEGREES * math.pi / 180.0)
            cos, sin = ops.cos(angle), ops.sin(angle)
            a0, a1, b0, b1 = (ops.where(pick, cos, a0), ops.where(pick, -sin, a1),
                              ops.where(pick, sin, b0), ops.where(pick, cos, b1))
        elif name == "shear_x":
            a1 = ops.where(pick, s * v * SHEAR, a1)
        elif name == "shear_y":
            b0 = ops.where(pick, s * v * SHEAR, b0)
        elif name == "translate_x":
            tx = ops.where(pick, s * v * TRANSLATE * w, tx)
        else:
            ty = ops.where(pick, s * v * TRANSLATE * h, ty)
    # The output pixel p reads the input at A (p - centre) + centre + t.
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    transform = ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
    return ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="constant", fill_value=0)


def apply_ops(x, names, k, v, s, active=None):
    """Applies to each image `i` of `x` the operation `names[k[i]]` at level `v[i]` with sign `s[i]`.

    Args:
        x: images `(batch, H, W, C)` scaled to [0, 1], float32.
        names: the operations the indices refer to, from `OPS`.
        k: int tensor `(batch,)` of indices into `names`.
        v: levels `(batch,)` in [0, 1] (timm's magnitude / 10).
        s: signs `(batch,)`, +1 or -1, of the signed operations.
        active: bool tensor `(batch,)`; an image where it is false is left as it is.
            Defaults to `None` (all active).
    """
    out = x
    if any(name in GEOMETRIC for name in names):
        geometric = ops.any(ops.stack([ops.equal(k, i) for i, n in enumerate(names) if n in GEOMETRIC]), axis=0)
        out = ops.where(_per_image(geometric), ops.clip(_affine(x, names, k, v, s), 0.0, 1.0), out)
    for i, name in enumerate(names):
        if name in PIXEL_OPS:
            out = ops.where(_per_image(ops.equal(k, i)), PIXEL_OPS[name](x, v, s), out)
    return out if active is None else ops.where(_per_image(active), out, x)


class RandomImagePolicy(keras.layers.Layer):
    """Base of kzoo's RandAugment and AugMix: checks the shared arguments, scales the images to
    [0, 1] in float32, calls `augment(x, batch)` in training and scales back; the identity
    otherwise. Every random draw comes from the layer's `SeedGenerator`, inside the graph.

    Args:
        value_range: `(low, high)` of the input images. Defaults to `(0, 255)`.
        magnitude: strength on timm's 0-10 scale. Defaults to `5.0`.
        seed: seed of the draws. Defaults to `None`.
    """

    def __init__(self, value_range=(0, 255), magnitude=5.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if (not isinstance(value_range, (tuple, list)) or len(value_range) != 2
                or not float(value_range[0]) < float(value_range[1])):
            raise ValueError(f"value_range must be (low, high) with low < high. Received: value_range={value_range}")
        if not 0 <= magnitude <= 10:
            raise ValueError(f"magnitude must be in [0, 10]. Received: magnitude={magnitude}")
        self.value_range = tuple(float(t) for t in value_range)
        self.magnitude = float(magnitude)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # ImageProjectiveTransformV3 (the affine transform) has no XLA kernel, as for Keras's
        # RandomRotation: the engine trains a model holding this layer without XLA.
        self.supports_jit = False

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} takes images (batch, H, W, C). Received: input_shape={input_shape}")

    def call(self, inputs, training=False):
        if not training:
            return inputs
        low, high = self.value_range
        x = (ops.cast(inputs, "float32") - low) / (high - low)
        out = self.augment(ops.clip(x, 0.0, 1.0), ops.shape(x)[0])
        return ops.cast(out * (high - low) + low, self.compute_dtype)

    def augment(self, x, batch):
        raise NotImplementedError

    def draw_ops(self, shape, names):
        """An operation index into `names` and a sign for each of `shape` positions."""
        k = keras.random.randint(shape, 0, len(names), seed=self.seed_generator)
        sign = ops.where(keras.random.uniform(shape, seed=self.seed_generator) < 0.5, -1.0, 1.0)
        return k, sign

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "value_range": list(self.value_range), "magnitude": self.magnitude,
                "seed": self.seed}
