"""Fine-tuning's framing of the inputs (pixel scale, resize, pad) as a layer inside the model."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class Framing(keras.layers.Layer):
    """Puts raw images in the framing a pretrained backbone was trained on: pixels times
    `scale`, a bilinear resize to `resize`, then `pad` zero pixels on every side.

    Inside the model, a saved or exported fine-tuned model takes the images at the size and
    value range of the user's data, and a serving client re-implements nothing. It follows the
    dtype policy like any layer; kzoo builds it with `dtype="float32"` (resizing in bfloat16 would
    shift pixels), so a mixed-precision model frames exactly as a float32 one.

    Args:
        scale: factor applied to the pixels first. Defaults to `1.0`.
        resize: `[height, width]` to resize to, or empty for none. Defaults to none.
        pad: zero pixels added on each side after resizing. Defaults to `0`.

    Example:
        >>> layer = Framing(scale=255 / 16, resize=[20, 20], pad=4)   # 8x8 digits as MNIST frames them
        >>> layer(np.zeros((2, 8, 8, 1))).shape
        (2, 28, 28, 1)

    Reference:
        LeCun et al., "Gradient-Based Learning Applied to Document Recognition", 1998 (MNIST's
        digits are size-normalised to a 20x20 box and centred in a 28x28 image).
    """

    def __init__(self, scale: float = 1.0, resize=(), pad: int = 0, **kwargs):
        super().__init__(**kwargs)
        resize = tuple(int(d) for d in (resize or ()))
        if len(resize) not in (0, 2) or any(d < 1 for d in resize):
            raise ValueError(f"resize must be empty or [height, width] of positive sizes. Received: resize={resize}")
        if int(pad) < 0:
            raise ValueError(f"pad must be >= 0. Received: pad={pad}")
        if not float(scale) > 0:
            raise ValueError(f"scale must be positive. Received: scale={scale}")
        self.scale, self.resize, self.pad = float(scale), resize, int(pad)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.scale != 1.0:
            x = x * self.scale
        if self.resize:
            x = ops.image.resize(x, self.resize, interpolation="bilinear", antialias=False)
        if self.pad:
            p = self.pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        return x

    def compute_output_shape(self, input_shape):
        height, width = (self.resize or tuple(input_shape[1:3]))
        grow = 2 * self.pad
        return (input_shape[0], None if height is None else height + grow, None if width is None else width + grow,
                input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "resize": list(self.resize), "pad": self.pad}
