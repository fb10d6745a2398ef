"""Callbacks whose state across epochs a resumed run gets back."""

from __future__ import annotations


class ResumableCallback:
    """Mixin for a callback that keeps state from one epoch to the next (a patience counter, the
    best value seen, the best weights, the samples a monitor has taken).

    A run checkpoints at the end of every epoch (`kzoo.runs.EpochBackup`): it saves
    `get_resume_state()` of each such callback with the checkpoint and, when a killed run is
    resumed, passes it to `set_resume_state` after every callback's `on_train_begin` has reset
    its state, so the callback goes on as if training had never stopped. The defaults save the
    attributes named in `resume_attributes` (JSON values: numbers, `inf` and `nan` included,
    strings, lists, dicts with string keys, `None`) and in `resume_weights` (lists of numpy
    arrays such as `model.get_weights()`, or `None`); override both methods for anything else.
    The backup duck-types: any callback with these two methods takes part.

    Example:
        >>> class Counter(ResumableCallback, keras.callbacks.Callback):
        ...     resume_attributes = ("epochs_seen",)
    """

    resume_attributes: tuple = ()
    resume_weights: tuple = ()

    def get_resume_state(self) -> tuple[dict, dict]:
        """`(values, weights)`: `{name: JSON value}` and `{name: list of arrays or None}`."""
        values = {name: getattr(self, name) for name in self.resume_attributes}
        weights = {name: getattr(self, name) for name in self.resume_weights}
        return values, weights

    def set_resume_state(self, values: dict, weights: dict):
        """Puts back what `get_resume_state` returned in the run that was killed.

        Args:
            values: the JSON values, as saved.
            weights: the lists of numpy arrays (or `None`), as saved.
        """
        for name, value in {**values, **weights}.items():
            setattr(self, name, value)


def sampled_between(before: int, after: int, every_n_steps: int) -> bool:
    """Whether steps `before` to `after - 1` (one call into the compiled graph, which runs
    `steps_per_execution` steps) hold a multiple of `every_n_steps`: a monitor sampling every
    `every_n_steps` steps then samples at the end of that call."""
    return -(-before // every_n_steps) * every_n_steps < after
