"""Errors a user can cause. The CLI turns each into one line and exit code 2."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A problem with the user's input: a recipe, a flag, a file or a dataset.

    The message is one line that names the problem and, where possible, the fix.
    """


class RecipeError(UserError):
    """A recipe or an override that does not validate."""


class DataError(UserError):
    """A dataset that cannot be found, read or downloaded."""


class RunDirError(UserError):
    """A run directory that would lose or overwrite earlier work."""


def closest(name: str, choices, n: int = 3) -> str:
    """Returns ' Did you mean: a, b?' for the closest valid names, or ''."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
