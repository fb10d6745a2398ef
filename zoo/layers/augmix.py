"""AugMix with every random choice drawn inside the graph from the layer's seed generator."""

from __future__ import annotations

import keras
from keras import ops

from kzoo.zoo.layers.image_ops import RandomImagePolicy, apply_ops

AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "solarize", "rotate", "shear_x", "shear_y",
              "translate_x", "translate_y")


@keras.saving.register_keras_serializable(package="kzoo")
class AugMix(RandomImagePolicy):
    """AugMix: `width` chains of 1 to `depth` random operations each, mixed with Dirichlet(alpha)
    weights, then blended with the original image with a Beta(alpha, alpha) weight:
    `(1 - m) * x + m * sum_i w_i * chain_i(x)`. Identity at inference.

    The operations are the paper's (autocontrast, equalize, posterize, solarize, rotate, shear
    and translate along x or y; no colour, contrast, brightness or sharpness, which overlap
    with the ImageNet-C corruptions); each draws its level uniformly in `[0, magnitude]` on
    timm's 0-10 scale (`kzoo.zoo.layers.image_ops`: rotation up to 30 degrees at 10). Every
    choice (operation per position, chain depth, level, sign, the weights) is drawn per image
    from the layer's `SeedGenerator` inside the graph, so a compiled step draws anew at each
    batch, and resetting the generator's state (kzoo's per-epoch reseeding) replays the draws.
    Keras 3.15's `AugMix` picks its operations with Python's `random` when the step is traced.

    Args:
        value_range: `(low, high)` of the input images. Defaults to `(0, 255)`.
        magnitude: the largest level of an operation, on timm's 0-10 scale (the paper's
            severity). Defaults to `3.0`.
        width: number of chains. Defaults to `3`.
        depth: largest number of operations in a chain; each chain draws its own from 1 to
            `depth`. Defaults to `3`.
        alpha: the Dirichlet and Beta parameter. Defaults to `1.0`.
        seed: seed of the draws. Defaults to `None`.

    Example:
        >>> layer = AugMix(value_range=(0, 255), magnitude=3, seed=0)
        >>> layer(images, training=True)  # mixed; layer(images) returns the images

    Reference:
        Hendrycks et al. 2020, "AugMix: A Simple Data Processing Method to Improve Robustness
        and Uncertainty", ICLR, https://arxiv.org/abs/1912.02781
    """

    def __init__(self, value_range=(0, 255), magnitude=3.0, width=3, depth=3, alpha=1.0, seed=None, **kwargs):
        super().__init__(value_range=value_range, magnitude=magnitude, seed=seed, **kwargs)
        for key, value in (("width", width), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0. Received: alpha={alpha}")
        self.width = width
        self.depth = depth
        self.alpha = float(alpha)

    def augment(self, x, batch):
        # The chains run side by side as one batch of width * batch images, chain-major.
        n = self.width * batch
        chains = ops.concatenate([x] * self.width, axis=0)
        lengths = keras.random.randint((n,), 1, self.depth + 1, seed=self.seed_generator)
        for position in range(self.depth):
            k, sign = self.draw_ops((n,), AUGMIX_OPS)
            level = keras.random.uniform((n,), 0.0, self.magnitude / 10.0, seed=self.seed_generator)
            chains = apply_ops(chains, AUGMIX_OPS, k, level, sign, active=position < lengths)
        chains = ops.reshape(chains, (self.width, batch, *x.shape[1:]))
        gammas = keras.random.gamma((self.width, batch), self.alpha, seed=self.seed_generator)
        weights = gammas / ops.maximum(ops.sum(gammas, axis=0, keepdims=True), 1e-12)  # Dirichlet
        mix = ops.sum(ops.reshape(weights, (self.width, batch, 1, 1, 1)) * chains, axis=0)
        g1, g2 = (keras.random.gamma((batch,), self.alpha, seed=self.seed_generator) for _ in range(2))
        m = ops.reshape(g1 / ops.maximum(g1 + g2, 1e-12), (-1, 1, 1, 1))  # Beta(alpha, alpha)
        return (1.0 - m) * x + m * mix

    def get_config(self):
        return {**super().get_config(), "width": self.width, "depth": self.depth, "alpha": self.alpha}
