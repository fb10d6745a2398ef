"""The divergence guard and the gradient and activation monitors go on after a resume as if the
run had never stopped: what docs/reliability.md promises for them.

A tiny model trains 4 epochs of 8 steps with the three callbacks and the run's checkpointing
(`kzoo.runs.EpochBackup`, which saves their state to disk with each epoch); in the 4th epoch its
learning rate jumps, the loss diverges and the guard stops the run and restores the best weights.
A second run of the same set-up is stopped right after the checkpoint of epoch 3 and started
again with new callback objects. Both must end with the same samples at the same steps, the same
stop (epoch, step, global step) and the same weights. The monitors sample every 3 steps, which
does not divide an epoch, so a step count that restarted at the resume would sample at other
steps; a guard that lost its best loss would stop elsewhere, or not at all, and one that lost
its best weights would restore the initial ones.
"""

import keras
import numpy as np
import pytest

from kzoo.callbacks import ActivationMonitor, DivergenceGuard, GradientMonitor
from kzoo.runs import EpochBackup

EPOCHS, STOP_AFTER = 4, 3


class Stopped(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    """Raises after epoch `epoch` ends (and, placed after the backup, after its checkpoint)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Stopped()


class Diverge(keras.callbacks.Callback):
    """Sets a learning rate the run cannot survive at the start of the last epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == EPOCHS - 1:
            self.model.optimizer.learning_rate.assign(50.0)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")


def _fit(backup_dir, stop_after=None):
    """Trains (or resumes) the run in `backup_dir`; returns its model and three callbacks."""
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(3, activation="softmax", name="out")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    probe = (x[:16], y[:16])
    own = [GradientMonitor(probe, every_n_steps=3), ActivationMonitor(probe, every_n_steps=3),
           DivergenceGuard(verbose=0)]
    extra = [StopAfter(stop_after)] if stop_after else []
    model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[Diverge()] + own + [EpochBackup(str(backup_dir), callbacks=own)] + extra)
    return model, own


@pytest.mark.filterwarnings("ignore:Gradients exploding")  # the monitor sees the divergence too
def test_monitors_and_divergence_guard_resume_with_their_state(tmp_path):
    model, (grad, act, guard) = _fit(tmp_path / "uninterrupted")
    with pytest.raises(Stopped):
        _fit(tmp_path / "interrupted", stop_after=STOP_AFTER)
    model2, (grad2, act2, guard2) = _fit(tmp_path / "interrupted")

    assert guard.stopped is not None and guard.stopped["epoch"] == EPOCHS  # the run diverged after the resume
    assert guard2.stopped == guard.stopped  # at the same step: same best loss, same global step count
    assert guard2.best_epoch == guard.best_epoch < STOP_AFTER
    for a, b in zip(model.get_weights(), model2.get_weights()):  # the best weights, restored by the guard
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)

    steps = [s["step"] for s in grad.trace]
    assert len(steps) >= 10 and steps[-1] >= STOP_AFTER * 8  # samples before and after the stop
    assert [s["step"] for s in grad2.trace] == steps
    assert [s["epoch"] for s in grad2.trace] == [s["epoch"] for s in grad.trace]
    for a, b in zip(grad.trace, grad2.trace):
        assert b["norms"] == pytest.approx(a["norms"], rel=1e-5, nan_ok=True)
    assert grad2._step == grad._step and grad2.flags == grad.flags
    assert [s["step"] for s in act2.trace] == [s["step"] for s in act.trace] == steps
    for a, b in zip(act.trace, act2.trace):
        assert b["stats"]["hidden"] == pytest.approx(a["stats"]["hidden"], rel=1e-5, abs=1e-7, nan_ok=True)
    assert act2._step == act._step
