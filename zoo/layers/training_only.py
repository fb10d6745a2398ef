"""A wrapper that applies a layer only during training."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kzoo")
class TrainingOnly(keras.layers.Layer):
    """Applies the wrapped layer only when called with `training=True`; identity otherwise.

    Keras's random augmentation layers treat a call without `training=` as training, so a
    plain `model(x)` (a monitor's probe, LSUV, a user in a notebook) would see augmented
    inputs. kzoo wraps each augmentation layer in this, so only `fit` (which passes
    `training=True`) augments, and test-time augmentation asks for it explicitly.

    Args:
        layer: the layer to apply in training, e.g. `keras.layers.RandomTranslation(0.1, 0.1)`.

    Example:
        >>> aug = TrainingOnly(keras.layers.RandomFlip("horizontal"), name="augment_flip")
        >>> aug(x) is x-valued; aug(x, training=True) is flipped at random
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"layer must be a Keras layer. Received: layer={layer!r}")
        self.layer = layer

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def call(self, inputs, training=None):
        if training is True:
            return self.layer(inputs, training=True)
        return inputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "layer": keras.layers.serialize(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)
