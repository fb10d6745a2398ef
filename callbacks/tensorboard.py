"""TensorBoard logs of a kzoo run: Keras's callback, fed what kzoo's callbacks put in the logs.

Keras's `keras.callbacks.TensorBoard` writes every value in the epoch logs as a scalar, so the
training-dynamics monitors' values (`update_ratio/median`, `grad_norm/<layer>`, ...) reach
TensorBoard once they are in the logs when it runs: `build_callbacks` puts this callback after
the others (`runs_last`). Two additions: the learning rate is the one kzoo's
`LearningRateLogger` put in the logs (the rate of the epoch's last step, plateau and adaptive
multipliers included, as in `history.csv`), and an optional histogram of the layers' update
ratios per epoch.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that keeps kzoo's logged learning rate and can draw the
    update ratios of all layers as one histogram per epoch.

    Args:
        log_dir: the folder of the event files (`train/` and `validation/` inside).
        update_ratio_histograms: each epoch, a histogram `update_ratio/log10` of log10 of every
            layer's update ratio (needs an `UpdateRatioMonitor` before this callback).
            Defaults to `False`.
        **kwargs: passed to `keras.callbacks.TensorBoard` (`histogram_freq` for weight
            histograms, `write_graph`, ...).

    Example:
        >>> model.fit(x, y, callbacks=[kzoo.callbacks.UpdateRatioMonitor(), TensorBoard("logs")])
        >>> # then: tensorboard --logdir logs
    """

    runs_last = True  # reads what the other callbacks write into the epoch logs

    def __init__(self, log_dir, update_ratio_histograms=False, **kwargs):
        super().__init__(log_dir=log_dir, **kwargs)
        self.update_ratio_histograms = bool(update_ratio_histograms)

    def _collect_learning_rate(self, logs):
        # Keras reads the optimizer's rate for the next step; the logged one is the epoch's own.
        return logs if "learning_rate" in logs else super()._collect_learning_rate(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.update_ratio_histograms and logs:
            ratios = [float(v) for k, v in logs.items()
                      if k.startswith("update_ratio/") and k != "update_ratio/median"]
            values = [math.log10(r) for r in ratios if math.isfinite(r) and r > 0]
            if values:
                with self._train_writer.as_default():
                    self.summary.histogram("update_ratio/log10", values, step=epoch)
                self._train_writer.flush()


def write_hparams(log_dir: str, values: dict, metrics: dict, trial_id: str):
    """Writes one row of TensorBoard's HParams dashboard: a trial's values and its figures, in
    `log_dir` (the trial's TensorBoard folder, beside its `train/` and `validation/`).

    Args:
        log_dir: the folder of the trial's event files.
        values: the trial's hyperparameters (lists and other values become strings).
        metrics: the trial's figures (its score), written as scalars at step 0.
        trial_id: the row's name.

    Example:
        >>> write_hparams("runs/tune-x/search/trial_0/tensorboard", {"optimizer.lr": 3e-3},
        ...               {"search/val_accuracy": 0.95}, "trial 0")
        >>> # then: tensorboard --logdir runs/tune-x/search  (HPARAMS tab)
    """
    plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hparams_api.hparams(plain, trial_id=trial_id)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=0)
    writer.flush()
    writer.close()
