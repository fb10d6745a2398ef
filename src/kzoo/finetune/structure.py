"""A model's layer groups for transfer (stem, ordered stages, head), read from layer names,
and freezing them.

The structure is never stored beside the model: it is derived from the layer names every zoo
model follows (`stem_*`, `stage{i}_*`, `head_*`) and, for a nested `keras.applications` backbone
(`backbone_<name>`), from that application's stage table in `kzoo.zoo.backbones`; for a nested
KerasHub backbone (found by its class), from its family's table in `kzoo.zoo.hub` (ResNet:
`conv1_*` stem, `stack{i}_*` stages). Names are saved with the model, so the structure survives
`model.save` / `keras.models.load_model` unchanged.
Layers that match no pattern join the group of the layer before them; preprocessing,
augmentation and input layers (`preprocess_*`, `augment_*`) belong to no group and never train.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import keras

from kzoo.zoo.backbones import application_for, derive_groups, stage_patterns
from kzoo.zoo.hub import hub_family

_STAGE = re.compile(r"^stage(\d+)_")
_OUTSIDE = ("preprocess_", "augment_", "input")


@dataclass
class Structure:
    """The layer groups of a model, each a list of layers in model order."""

    stem: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    head: list = field(default_factory=list)

    def groups(self) -> list[tuple[str, list]]:
        """`(name, layers)` from the head down: head, the last stage, ..., stage 0, stem."""
        out = [("head", self.head)]
        out += [(f"stage{i}", layers) for i, layers in reversed(list(enumerate(self.stages)))]
        return out + [("stem", self.stem)]

    def names(self) -> dict:
        """Layer names per group: `{"stem": [...], "stages": [[...], ...], "head": [...]}`."""
        return {"stem": [lyr.name for lyr in self.stem], "stages": [[lyr.name for lyr in s] for s in self.stages],
                "head": [lyr.name for lyr in self.head]}


def _is_model(layer) -> bool:
    return isinstance(layer, keras.Model) and bool(getattr(layer, "layers", None))


def _assign_zoo(layers, groups, current):
    """Walks layers named by the zoo's pattern; returns the group the last layer joined."""
    for layer in layers:
        name = layer.name
        if isinstance(layer, keras.layers.InputLayer) or name.startswith(_OUTSIDE):
            continue
        if _is_model(layer):
            app, family = application_for(name), hub_family(layer)
            if app:
                current = _assign_application(layer, app, groups)
            elif family:
                current = _assign_hub(layer, family, groups)
            else:
                current = _assign_zoo(layer.layers, groups, current)
            continue
        m = _STAGE.match(name)
        if name.startswith("stem_"):
            current = ("stem", 0)
        elif m:
            current = ("stage", int(m.group(1)))
        elif name.startswith("head_"):
            current = ("head", 0)
        groups.setdefault(current or ("stem", 0), []).append(layer)
    return current


def _assign_application(model, app, groups):
    """Groups a `keras.applications` backbone's layers: by its hand-written table where it has
    one, else as `kzoo.zoo.backbones.derive_groups` derives them from the built model."""
    patterns = stage_patterns(app)
    if patterns is None:
        current = ("stem", 0)
        for layer, current in derive_groups(model):
            groups.setdefault(current, []).append(layer)
        return current
    stem, stages = patterns
    current = ("stem", 0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if any(p.search(layer.name) for p in stem):
            current = ("stem", 0)
        for i, stage_patterns_i in enumerate(stages):
            if any(p.search(layer.name) for p in stage_patterns_i):
                current = ("stage", i)
        groups.setdefault(current, []).append(layer)
    return current


def _assign_hub(model, family, groups):
    """Groups a KerasHub backbone's layers by its family's table: stem patterns first, then the
    stage number the stage pattern captures (numbers taken in sorted order as stages 0, 1, ...)."""
    stem, stage = family.patterns()
    layers = family.layers(model)
    numbers = sorted({int(m.group(1)) for lyr in layers if (m := stage.search(lyr.name))
                      and not any(p.search(lyr.name) for p in stem)})
    index = {n: i for i, n in enumerate(numbers)}
    current = ("stem", 0)
    for layer in layers:
        m = stage.search(layer.name)
        if any(p.search(layer.name) for p in stem):
            current = ("stem", 0)
        elif m:
            current = ("stage", index[int(m.group(1))])
        groups.setdefault(current, []).append(layer)
    return current


def model_structure(model) -> Structure:
    """The stem, ordered stages and head of a zoo model, a model with a nested application
    backbone, or either after save/load.

    Example:
        >>> s = model_structure(kzoo.zoo.create_model("resnet20", (32, 32, 3), 10))
        >>> len(s.stages), s.head[-1].name
        (3, 'head_dense')
    """
    groups: dict = {}
    _assign_zoo(model.layers, groups, None)
    indices = sorted(i for kind, i in groups if kind == "stage")
    if indices != list(range(len(indices))):
        raise ValueError(f"Stage numbers must run 0, 1, 2, ... Received: stages={indices}")
    return Structure(stem=groups.get(("stem", 0), []), stages=[groups[("stage", i)] for i in indices],
                     head=groups.get(("head", 0), []))


def freeze(model, structure: Structure, trainable_groups: int, train_bn: bool = False):
    """Makes the top `trainable_groups` groups (head first) trainable and freezes the rest.

    A frozen layer's `trainable` is False; Keras 3 then runs a BatchNormalization layer in
    inference mode, so its moving statistics stay as they are. With `train_bn=False`, the
    BatchNormalization layers of unfrozen groups stay frozen too (Keras's transfer-learning
    guide); with `True` they train once their group is unfrozen. Recompile afterwards.

    Returns:
        The names of the trainable groups, head first.
    """
    model.trainable = True  # resets every nested layer; groups are set below
    for layer in _outside_layers(model):
        layer.trainable = False
    trainable = []
    for index, (name, layers) in enumerate(structure.groups()):
        on = index < trainable_groups
        if on:
            trainable.append(name)
        for layer in layers:
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = on and (train_bn or not is_bn)
    return trainable


def _outside_layers(model):
    for layer in model.layers:
        if _is_model(layer):
            if hub_family(layer) is None:  # a KerasHub backbone has none: its `input_*` layers train
                yield from _outside_layers(layer)
        elif layer.name.startswith(_OUTSIDE):
            yield layer
