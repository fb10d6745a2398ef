"""A registry of named builders, listed with wildcards (the timm pattern)."""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from typing import Any, Callable

from kzoo.errors import UserError, closest


class Registry:
    """Maps names to builder functions or classes, each with a one-line description.

    Args:
        kind: what the registry holds, used in messages ("model", "dataset", ...).

    Example:
        >>> models = Registry("model")
        >>> @models.register(description="Tiny MLP")
        ... def tiny(**kwargs): ...
        >>> models.list("t*")
        ['tiny']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, fn: Callable | None = None, *, name: str | None = None, **meta):
        """Registers `fn` under `name` (default: its `__name__`); extra keywords are its metadata."""

        def wrap(f):
            key = name or f.__name__
            if key in self._entries and self._entries[key] is not f:
                warnings.warn(f"{self.kind} '{key}' registered twice; the later one wins.", stacklevel=2)
            self._entries[key] = f
            doc = (inspect.getdoc(f) or "").strip().splitlines()
            self._meta[key] = {"description": doc[0] if doc else "", **meta}
            return f

        return wrap(fn) if fn is not None else wrap

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard pattern (or a list of patterns)."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(n for n in self._entries if any(fnmatch.fnmatch(n, p) for p in patterns))

    def get(self, name: str) -> Callable:
        """The builder for `name`; an unknown name is a UserError naming the closest ones."""
        if name not in self._entries:
            raise UserError(
                f"Unknown {self.kind} '{name}'.{closest(name, self._entries)} "
                f"See `kzoo list {self.kind}s`."
            )
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def parameters(self, name: str, skip=()) -> dict[str, inspect.Parameter]:
        """The keyword parameters a builder accepts, minus the ones the caller supplies."""
        sig = inspect.signature(self.get(name))
        return {
            k: p
            for k, p in sig.parameters.items()
            if k not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
