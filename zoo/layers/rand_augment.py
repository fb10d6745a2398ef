"""RandAugment on timm's magnitude scale, drawn inside the graph from the layer's seed generator."""

from __future__ import annotations

import keras
from keras import ops

from kzoo.zoo.layers.image_ops import OPS, RandomImagePolicy, apply_ops


@keras.saving.register_keras_serializable(package="kzoo")
class RandAugment(RandomImagePolicy):
    """RandAugment as timm applies it (`rand-m{magnitude}-n{num_ops}-inc1`): `num_ops` times,
    each image takes one of 15 operations at random, applied with probability `rate`, at the
    fixed level `magnitude` of 10 with a random sign. Identity at inference.

    The levels are timm's (`kzoo.zoo.layers.image_ops`): at magnitude 5, rotation by 15 degrees,
    shear 0.15, translation by 22.5 % of the image, colour, contrast, brightness and sharpness
    factors 1 +- 0.45, and so on. Keras's `RandAugment` gives every operation one `factor`
    (at `factor = 0.5` a rotation of up to half a turn) and picks the operations per batch;
    this layer picks them per image, as the paper and timm do.

    Args:
        value_range: `(low, high)` of the input images. Defaults to `(0, 255)`.
        num_ops: operations per image (the paper's N). Defaults to `2`.
        magnitude: the level of every operation on timm's 0-10 scale (the paper's M).
            Defaults to `5.0`.
        rate: probability of applying each drawn operation (timm's 0.5). Defaults to `0.5`.
        seed: seed of the draws. Defaults to `None`.

    Example:
        >>> layer = RandAugment(value_range=(0, 255), num_ops=2, magnitude=9, seed=0)
        >>> layer(images, training=True)  # augmented; layer(images) returns the images

    Reference:
        Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced
        search space", NeurIPS, https://arxiv.org/abs/1909.13719
    """

    def __init__(self, value_range=(0, 255), num_ops=2, magnitude=5.0, rate=0.5, seed=None, **kwargs):
        super().__init__(value_range=value_range, magnitude=magnitude, seed=seed, **kwargs)
        if not isinstance(num_ops, int) or isinstance(num_ops, bool) or num_ops < 1:
            raise ValueError(f"num_ops must be a positive integer. Received: num_ops={num_ops!r}")
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1]. Received: rate={rate}")
        self.num_ops = num_ops
        self.rate = float(rate)

    def augment(self, x, batch):
        level = ops.full((batch,), self.magnitude / 10.0)
        for _ in range(self.num_ops):
            k, sign = self.draw_ops((batch,), OPS)
            applied = keras.random.uniform((batch,), seed=self.seed_generator) < self.rate
            x = apply_ops(x, OPS, k, level, sign, active=applied)
        return x

    def get_config(self):
        return {**super().get_config(), "num_ops": self.num_ops, "rate": self.rate}
