"""Writes the learning rate actually used into each epoch's logs."""

from __future__ import annotations

import keras

from kzoo.callbacks.lr_control import learning_rate_at


class LearningRateLogger(keras.callbacks.Callback):
    """Puts `learning_rate` into epoch logs: the rate of the epoch's last step, with the schedule
    and any multiplier a plateau or adaptive callback applied, so History, CSVLogger and
    `history.csv` record the rate the optimizer really used."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "learning_rate" in logs:
            return
        logs["learning_rate"] = learning_rate_at(self.model.optimizer)
