"""Normalization layers by name: batch, layer, instance, group, none.

Reference:
    Ioffe & Szegedy 2015 (batch); Ba et al. 2016 (layer); Ulyanov et al. 2016 (instance);
    Wu & He 2018 (group).
"""

from __future__ import annotations

import keras

from kzoo.registry import Registry
from kzoo.zoo.layers import FusedBatchNormalization

NORMS = Registry("norm")


def register_norm(fn=None, **meta):
    """Registers `fn(name=None, momentum=0.9, **kwargs) -> Layer | None`."""
    return NORMS.register(fn, **meta)


@register_norm
def batch(name=None, momentum=0.9, **kwargs):
    """Batch normalization over the batch and spatial axes (Ioffe & Szegedy 2015), training
    through TensorFlow's fused kernel where it applies (`FusedBatchNormalization`)."""
    return FusedBatchNormalization(momentum=momentum, name=name, **kwargs)


@register_norm
def layer(name=None, momentum=0.9, **kwargs):
    """Layer normalization over the last axis of each example (Ba et al. 2016); on conv features, per position."""
    return keras.layers.LayerNormalization(name=name, **kwargs)


@register_norm
def instance(name=None, momentum=0.9, **kwargs):
    """Instance normalization: each channel of each example over its spatial axes (Ulyanov et al. 2016)."""
    return keras.layers.GroupNormalization(groups=-1, name=name, **kwargs)


@register_norm
def group(name=None, momentum=0.9, groups=8, **kwargs):
    """Group normalization over groups of channels (Wu & He 2018)."""
    return keras.layers.GroupNormalization(groups=groups, name=name, **kwargs)


@register_norm
def none(name=None, momentum=0.9, **kwargs):
    """No normalization."""
    return None


def get(spec="batch", name=None, momentum=0.9, channels=None):
    """Returns a new normalization layer (or None) for a name or a `{name = ...}` table.

    `channels` lets group normalization fall back to fewer groups on narrow layers.
    """
    kwargs = {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        spec = kwargs.pop("name", "batch")
    if spec == "group" and channels is not None:
        groups = kwargs.get("groups", 8)
        while channels % groups:
            groups -= 1
        kwargs["groups"] = groups
    return NORMS.get(spec)(name=name, momentum=momentum, **kwargs)
