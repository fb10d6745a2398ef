"""MixUp and CutMix on training batches: two images and their labels blended into one example
with a soft label, in the data pipeline (they need the labels, which the model never sees).

Keras 3 has `keras.layers.MixUp` and `keras.layers.CutMix`, but they draw from a stateful
`SeedGenerator` whose position is in no checkpoint (a resumed run would draw other weights and
boxes than an uninterrupted one), `CutMix`'s `factor` is not the paper's Beta concentration,
and `MixUp` draws one weight per example. kzoo mixes with a small tf.data map over stateless
random ops instead: each batch's draws are a function of the run's seed, the epoch and the
batch's index in its epoch only, so a run killed and resumed at any epoch mixes exactly the
batches an uninterrupted one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kzoo.errors import RecipeError

# TensorFlow is imported inside the functions that build pipelines (5-6 s to import; the recipe
# checks construct `Mixing` without it).


@dataclass(frozen=True)
class Mixing:
    """The recipe's MixUp and CutMix (`[data.augment] mixup`, `cutmix`) for training batches.

    A mixed batch pairs each example `i` with example `perm[i]` of the same batch (a random
    permutation) and one weight `lam ~ Beta(alpha, alpha)` for the whole batch:

    - MixUp: `x = lam * x_i + (1 - lam) * x_perm[i]`, `y = lam * y_i + (1 - lam) * y_perm[i]`.
    - CutMix: a box of `(1 - lam)` of the image area at a uniform centre (clipped at the
      border; one box per batch) is pasted from `x_perm[i]` into `x_i`; the label weight of
      `y_perm[i]` is the share of the image the clipped box covers.

    With both on, each batch uses CutMix with probability `switch_prob`, else MixUp (timm's
    `Mixup(switch_prob=0.5)`). Labels become float32 one-hot rows mixed as above (shape
    `(batch, num_classes)`, summing to 1).

    Args:
        mixup: MixUp's Beta concentration alpha (> 0 on, 0 off). Defaults to `0.0`.
        cutmix: CutMix's Beta concentration alpha (> 0 on, 0 off). Defaults to `0.0`.
        switch_prob: the chance a batch uses CutMix when both are on. Defaults to `0.5`.

    Reference:
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018
        (https://arxiv.org/abs/1710.09412); Yun et al., "CutMix: Regularization Strategy to
        Train Strong Classifiers with Localizable Features", ICCV 2019
        (https://arxiv.org/abs/1905.04899).

    Example:
        >>> mixing = Mixing(mixup=0.2, cutmix=1.0)
        >>> batches = mixing.apply(batches, num_classes=10, seed=0, initial_epoch=0, steps_per_epoch=22)
    """

    mixup: float = 0.0
    cutmix: float = 0.0
    switch_prob: float = 0.5

    def __post_init__(self):
        for key in ("mixup", "cutmix"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0 (0: off). Received: {key}={value!r}")
        if not 0 <= self.switch_prob <= 1:
            raise ValueError(f"switch_prob must be in [0, 1]. Received: switch_prob={self.switch_prob}")

    @property
    def active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def apply(self, batches, num_classes: int, seed: int, initial_epoch: int, steps_per_epoch: int, stream: int = 0):
        """`batches` (a `tf.data.Dataset` of `(x, y int)` batches, batch `i` being batch
        `i % steps_per_epoch` of epoch `initial_epoch + i // steps_per_epoch`) mixed; unchanged
        when neither lever is on.

        Args:
            num_classes: the width of the soft labels.
            seed: the run's seed.
            initial_epoch: the epoch of the first batch.
            steps_per_epoch: batches in each epoch.
            stream: another draw for the same `(seed, epoch, batch)` (a worker's index in
                multi-worker training). Defaults to `0`.
        """
        if not self.active:
            return batches
        import tensorflow as tf

        steps = max(int(steps_per_epoch), 1)
        base = (int(seed) * 1_000_003 + int(stream) * 7_919 + 0x5EED) % (2**31 - 1)

        def mix(i, batch):
            epoch = tf.cast(initial_epoch, tf.int64) + i // steps
            key = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(base, tf.int64), epoch]), i % steps)
            return self.mix_batch(batch[0], batch[1], num_classes, key)

        return batches.enumerate().map(mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def mix_batch(self, x, y, num_classes: int, key):
        """One batch mixed with the stateless seed `key` (shape `(2,)`): `(x float32, y soft)`."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        labels = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), int(num_classes), dtype=tf.float32)
        k_perm, k_choice, k_mixup, k_cutmix = tf.unstack(tf.random.experimental.stateless_split(key, 4))
        perm = tf.argsort(tf.random.stateless_uniform(tf.shape(x)[:1], k_perm))
        other_x, other_labels = tf.gather(x, perm), tf.gather(labels, perm)

        def mixup():
            lam = _beta(self.mixup, k_mixup)
            return lam * x + (1 - lam) * other_x, lam

        def cutmix():
            mask, lam = _box_mask(tf.shape(x), self.cutmix, k_cutmix)
            return tf.where(mask, other_x, x), lam

        if self.mixup > 0 and self.cutmix > 0:
            use_cutmix = tf.random.stateless_uniform([], k_choice) < self.switch_prob
            mixed, lam = tf.cond(use_cutmix, cutmix, mixup)
        else:
            mixed, lam = cutmix() if self.cutmix > 0 else mixup()
        return mixed, lam * labels + (1 - lam) * other_labels

    def check(self, input_shape):
        """Raises `RecipeError` when CutMix is asked of inputs that are not images `(H, W, C)`."""
        if self.cutmix > 0 and len(tuple(input_shape)) != 3:
            raise RecipeError("data.augment.cutmix pastes boxes and needs image inputs (H, W, C). "
                              f"Received: input_shape={tuple(input_shape)}")


def _beta(alpha: float, key):
    """One draw of `Beta(alpha, alpha)` from two stateless gamma draws."""
    import tensorflow as tf

    g = tf.random.stateless_gamma([2], tf.random.experimental.stateless_fold_in(key, 0), alpha=float(alpha))
    total = g[0] + g[1]
    return tf.where(total > 0, g[0] / tf.maximum(total, 1e-30), 0.5)


def _box_mask(shape, alpha: float, key):
    """`(mask, lam)`: a `(1, H, W, 1)` mask of one box covering `1 - Beta(alpha, alpha)` of the
    image, centred uniformly and clipped at the border (Yun et al.'s `rand_bbox`), and `lam`,
    one minus the share of the image the clipped box covers."""
    import tensorflow as tf

    h, w = shape[1], shape[2]
    ratio = tf.sqrt(1.0 - _beta(alpha, key))
    cut_h = tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32)
    centre = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(key, 1), dtype=tf.float32)
    cy = tf.cast(centre[0] * tf.cast(h, tf.float32), tf.int32)
    cx = tf.cast(centre[1] * tf.cast(w, tf.float32), tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, h), tf.clip_by_value(cy + cut_h // 2, 0, h)
    x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, w), tf.clip_by_value(cx + cut_w // 2, 0, w)
    rows, cols = tf.range(h), tf.range(w)
    inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    lam = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
    return inside[None, :, :, None], lam
