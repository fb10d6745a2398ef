"""Early stopping that survives a resume."""

from __future__ import annotations

import keras

from kzoo.callbacks.resumable import ResumableCallback


class EarlyStopping(ResumableCallback, keras.callbacks.EarlyStopping):
    """Keras's `EarlyStopping` whose patience counter, best value and best weights are saved with
    each checkpoint, so a resumed run stops at the same epoch with the same weights as an
    uninterrupted one. Arguments as in Keras.

    With `restore_best_weights`, the best weights are also put back at the end of the last
    epoch (the one it stops at, or the fit's last), not only when training ends, so the
    checkpoint of that epoch holds the weights the fit ends with: a staged run resumed after
    it starts the next stage from them.

    Example:
        >>> model.fit(..., callbacks=[kzoo.callbacks.EarlyStopping(patience=3, restore_best_weights=True)])
    """

    resume_attributes = ("wait", "stopped_epoch", "best", "best_epoch")
    resume_weights = ("best_weights",)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        last = self.model.stop_training or epoch + 1 >= (self.params or {}).get("epochs", epoch + 2)
        if last and self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
