"""Writes the learning rate actually used into each epoch's logs."""

from __future__ import annotations

import keras


class LearningRateLogger(keras.callbacks.Callback):
    """Puts `learning_rate` (the optimizer's current rate, schedules included) into epoch logs,
    so History, CSVLogger and `history.csv` record it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "learning_rate" in logs:
            return
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
