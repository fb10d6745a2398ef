"""Batch normalization that trains through TensorFlow's fused kernel."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kzoo")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step is one fused TensorFlow op.

    Keras 3 normalizes a batch with about ten elementwise ops (moments, then the affine
    normalization) and differentiates through each of them; tf.keras 2 ran one
    `FusedBatchNormV3` kernel (oneDNN on CPU, cuDNN on GPU) and its one gradient op. This layer
    brings the fused kernel back for the case it covers: training on the TensorFlow backend,
    4-D channels-last inputs (convolution features), no mask, no renormalization, no
    cross-replica statistics. Everything else (inference, frozen layers, other ranks and
    backends) is Keras's own code path, and the weights, config and saved form are the parent's.

    The moving statistics follow Keras's rule, `moving = moving * momentum + batch * (1 -
    momentum)` with the biased batch variance (the fused kernel returns the unbiased one; the
    layer undoes Bessel's correction), so the two layers agree to float rounding. One kernel
    and its gradient replace Keras's several batch-norm ops per layer; what that is worth shows
    in the batch-norm share of the op-time profiles `python -m benchmarks` records for the rows
    under their goal.

    Args:
        **kwargs: those of `keras.layers.BatchNormalization`.

    Example:
        >>> x = keras.layers.Conv2D(32, 3, use_bias=False)(inputs)
        >>> x = FusedBatchNormalization(momentum=0.9)(x)

    Reference:
        Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by
        Reducing Internal Covariate Shift", https://arxiv.org/abs/1502.03167
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None and keras.backend.backend() == "tensorflow"
                and len(inputs.shape) == 4 and self.axis in (3, -1) and not self.renorm and not self.synchronized)

    @staticmethod
    def _native(inputs) -> bool:
        """Whether the fused kernel takes `inputs` as they are. It accumulates the statistics in
        float32 for float32, bfloat16 and float16 features alike (as Keras does under mixed
        precision), but oneDNN's half-precision kernels on CPU run fast only on channel counts
        that fill its 16-wide blocks: with others (a DenseNet's 24, 36, 60) the kernel and its
        gradient ran several times slower than a cast to float32 and back, with multiples of 16
        (ResNet-20's 16, 32, 64) faster than the casts."""
        import tensorflow as tf

        if inputs.dtype == tf.float32:
            return True
        channels = inputs.shape[-1]
        return inputs.dtype in (tf.bfloat16, tf.float16) and channels is not None and channels % 16 == 0

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = inputs if self._native(inputs) else tf.cast(inputs, "float32")
        ones = tf.ones_like(self.moving_mean)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma if self.scale else ones, offset=self.beta if self.center else ones * 0.0,
            mean=self.moving_mean, variance=self.moving_variance, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)
