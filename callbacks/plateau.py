"""Reduce the learning rate on a plateau, also when the optimizer holds a schedule."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.callbacks.lr_control import learning_rate_at, scale_learning_rate
from kzoo.callbacks.resumable import ResumableCallback


class ReduceLROnPlateau(ResumableCallback, keras.callbacks.ReduceLROnPlateau):
    """Keras's `ReduceLROnPlateau`, made to compose with learning-rate schedules.

    Keras assigns a new rate to the optimizer, which fails when it holds a schedule. This one
    multiplies a kzoo `ScaledSchedule`'s multiplier instead (a float rate is scaled as before),
    so the schedule keeps its shape at a lower level; `min_lr` bounds the rate actually used.
    The epoch's `learning_rate` log is the rate its last step used. Arguments as in Keras.
    Its counters and best value are saved with each checkpoint (the schedule's multiplier is
    too, by the checkpoint itself), so a resumed run reduces the rate at the same epochs.

    Example:
        >>> optimizer = keras.optimizers.SGD(ScaledSchedule(CosineDecay(0.1, 1000)))
        >>> model.fit(..., callbacks=[kzoo.callbacks.ReduceLROnPlateau(patience=3)])
    """

    resume_attributes = ("wait", "best", "cooldown_counter", "reductions")

    def set_resume_state(self, values, weights):
        super().set_resume_state(values, weights)
        self.reductions = [tuple(r) for r in self.reductions]  # JSON gave lists back

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.reductions = []  # [(epoch, before, after)]

    def _reduce_optimizer_lr(self, optimizer, epoch, name=""):
        old = learning_rate_at(optimizer, int(keras.ops.convert_to_numpy(optimizer.iterations)))
        if old <= np.float32(self.min_lr):
            return False
        factor = max(self.factor, self.min_lr / old)
        before, after = scale_learning_rate(optimizer, factor)
        self.reductions.append((epoch, before, after))
        if self.verbose > 0:
            print(
                f"\nEpoch {epoch + 1}: ReduceLROnPlateau scaling the learning rate by {factor:.3g}: "
                f"{before:.3g} -> {after:.3g}.")
        return True

    def on_epoch_end(self, epoch, logs=None):
        used = learning_rate_at(self.model.optimizer)
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            logs["learning_rate"] = used
