"""The model registry: `register_model`, `create_model`, `list_models` (the timm pattern)."""

from __future__ import annotations

import inspect

from kzoo.errors import UserError, closest
from kzoo.registry import Registry

MODELS = Registry("model")

# Arguments every builder takes that come from the data, not from the recipe's [model] table.
DATA_ARGS = ("input_shape", "num_classes", "preprocessing")


def register_model(fn=None, **meta):
    """Registers a model builder `fn(input_shape, num_classes, preprocessing=None, **kwargs)`.

    Example:
        >>> @register_model(family="mlp")
        ... def mlp_tiny(input_shape, num_classes, preprocessing=None, **kwargs):
        ...     return mlp(input_shape, num_classes, preprocessing, depth=1, width=16, **kwargs)
    """
    return MODELS.register(fn, **meta)


def list_models(pattern="*") -> list[str]:
    """Registered model names matching a wildcard pattern: `list_models("resnet*")`."""
    return MODELS.list(pattern)


def model_defaults(name: str) -> dict:
    """Every argument a model accepts (beyond the data's) with its default for that model.

    Thin builders that pass `**kwargs` to a configurable builder name it with
    `register_model(builder=..., defaults={...})`, so their arguments are known and checked.
    """
    meta = MODELS.meta(name)
    params = MODELS.parameters(name, skip=DATA_ARGS)
    if "builder" in meta:
        params = {**params, **{
            k: p for k, p in inspect.signature(meta["builder"]).parameters.items()
            if k not in DATA_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }}
    defaults = {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in params.items()}
    defaults.pop("name", None)
    return {**defaults, **meta.get("defaults", {})}


def create_model(name: str, input_shape=(8, 8, 1), num_classes: int = 10, preprocessing=None, **kwargs):
    """Builds a registered model by name.

    Args:
        name: a name from `list_models()`.
        input_shape: shape of one example, without the batch axis. Defaults to `(8, 8, 1)`.
        num_classes: size of the softmax output. Defaults to `10`.
        preprocessing: layers applied to the raw input inside the model (normalization,
            augmentation), so the saved model carries them. Defaults to none.
        **kwargs: the builder's own arguments (depth, width, activation, ...).
    """
    builder = MODELS.get(name)
    accepted = model_defaults(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UserError(
            f"Model '{name}' has no argument '{unknown[0]}'.{closest(unknown[0], accepted)} "
            f"Valid: {', '.join(sorted(accepted))}."
        )
    return builder(input_shape=tuple(input_shape), num_classes=num_classes, preprocessing=preprocessing, **kwargs)
