"""A killed run resumes from its last finished epoch and ends exactly as an uninterrupted one."""

import csv
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kzoo.errors import RunDirError
from kzoo.finetune import parse_stages
from kzoo.runs import BACKUP, LOCK, RunDir, atomic_write, latest_snapshot
from kzoo.train.loop import compile_stage as compile_stage_as_shipped


def _kzoo(*args):
    return [sys.executable, "-m", "kzoo", *[str(a) for a in args]]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _wait_for_checkpoint(out, proc, after=0, timeout=180):
    """Waits for a checkpoint of an epoch past `after`; False if the run ended first."""
    backup = os.path.join(out, BACKUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        # A finished checkpoint's folder name is its commit; reading inside it would race the run.
        names = os.listdir(backup) if os.path.isdir(backup) else []
        if any(n[6:].isdigit() and int(n[6:]) > after for n in names if n.startswith("epoch-")):
            return True
        time.sleep(0.01)
    return False


def _sigkill_when_checkpointed(args, out, after=0):
    """Starts `kzoo ARGS`, SIGKILLs it once an epoch past `after` is checkpointed."""
    proc = subprocess.Popen(_kzoo(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        assert _wait_for_checkpoint(str(out), proc, after), "no checkpoint appeared before the run ended"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()


def _weights(path):
    from kzoo.safe_load import load_model

    return load_model(path).get_weights()


def _assert_same_run(out, reference, keys):
    """The run in `out` ended as the uninterrupted one in `reference`: the metrics `keys`, every
    history row (each epoch once, the same numbers) and the weights; no checkpoint or lock left."""
    metrics, expected = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    for key in keys:
        assert metrics[key] == expected[key], key
    assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()
    weights, expected_weights = _weights(str(out / "model.keras")), _weights(str(reference / "model.keras"))
    assert len(weights) == len(expected_weights)
    for a, b in zip(weights, expected_weights):
        np.testing.assert_array_equal(a, b)
    assert not (out / BACKUP).exists()  # checkpoints go once the artifacts are written
    assert not (out / LOCK).exists()


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_sigkilled_run_resumes_and_equals_uninterrupted_run(tmp_path):
    """cnn-digits with its defaults: bfloat16 on a CPU that has it, fused batch norm, random
    translation inside the model (the staged test below covers an XLA-compiled MLP)."""
    import kzoo.recipes

    epochs = 6
    killed = tmp_path / "killed"
    run_args = ("run", "cnn-digits", "--epochs", epochs, "--out", killed, "--quiet")
    _sigkill_when_checkpointed(run_args, killed)

    resumed = subprocess.run(_kzoo(*run_args), capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    kzoo.recipes.run(kzoo.recipes.load("cnn-digits", {"epochs": epochs}), out=str(tmp_path / "uninterrupted"),
                     verbose=0)

    metrics = json.loads((killed / "metrics.json").read_text())
    assert 1 <= metrics["resumed_after_epoch"] < epochs
    _assert_same_run(killed, tmp_path / "uninterrupted", ("test_accuracy", "test_loss", "best_val_accuracy",
                                                          "epochs_run", "params"))
    with open(killed / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, epochs + 1))
    from kzoo.safe_load import load_model
    from kzoo.train.distribution import cpu_has_bf16

    policy = load_model(str(killed / "model.keras")).get_layer("stage0_block0_conv").dtype_policy.name
    assert policy == ("mixed_bfloat16" if cpu_has_bf16() else "float32")


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_sigkilled_run_on_a_folder_resumes_and_equals_uninterrupted_run(tmp_path):
    """The same on a folder of images, which streams: the split, each epoch's shuffle of the file
    list and the decoded pixels are the same in the resumed process."""
    import tensorflow as tf

    import kzoo.recipes

    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for label, name in enumerate(("dark", "mid", "light")):
        (root / name).mkdir(parents=True)
        for i in range(30):
            pixels = np.clip(rng.normal(60 + 70 * label, 40, (10, 9, 3)), 0, 255).astype("uint8")
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    epochs, data = 6, [f'data.dataset="folder:{root}"', "data.image_size=[8, 8]"]
    killed = tmp_path / "killed"
    run_args = ("run", "mlp-digits", "--epochs", epochs, "--out", killed, "--quiet",
                *[a for setting in data for a in ("--set", setting)])
    _sigkill_when_checkpointed(run_args, killed)

    resumed = subprocess.run(_kzoo(*run_args), capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    kzoo.recipes.run(kzoo.recipes.load("mlp-digits", [*data, f"epochs={epochs}"]),
                     out=str(tmp_path / "uninterrupted"), verbose=0)

    metrics = json.loads((killed / "metrics.json").read_text())
    assert 1 <= metrics["resumed_after_epoch"] < epochs
    _assert_same_run(killed, tmp_path / "uninterrupted", ("test_accuracy", "test_loss", "best_val_accuracy",
                                                          "epochs_run", "params"))


def test_full_disk_at_the_end_loses_no_training(tmp_path, cli, monkeypatch):
    out = tmp_path / "run"
    real_write = RunDir.write_text

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(self, name, text):
        with monkeypatch.context() as m:
            if name == "metrics.json":
                m.setattr(os, "fsync", no_space)
            return real_write(self, name, text)

    monkeypatch.setattr(RunDir, "write_text", full_disk)
    code, _, err = cli("run", "mlp-digits", "--epochs", 2, "--out", out, "--quiet")
    assert code == 2 and "No space left" in err and err.count("\n") == 1
    assert latest_snapshot(str(out / BACKUP)).epoch == 2  # the checkpoint survives

    monkeypatch.setattr(RunDir, "write_text", real_write)
    code, stdout, err = cli("run", "mlp-digits", "--epochs", 2, "--out", out, "--quiet")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 2 and metrics["epochs_run"] == 2
    assert metrics["test_accuracy"] > 0.5
    assert not (out / BACKUP).exists()


def test_atomic_write_keeps_previous_version_when_the_disk_is_full(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}')

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RunDirError, match="No space left on device.*previous version is intact"):
        atomic_write(str(path), '{"new": 2}')
    assert path.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind


def test_half_written_checkpoint_is_ignored(tmp_path):
    backup = tmp_path / BACKUP
    (backup / "epoch-0002").mkdir(parents=True)
    (backup / "epoch-0002" / "history.json").write_text(json.dumps([{"epoch": 1}, {"epoch": 2}]))
    (backup / "epoch-0003.tmp").mkdir()  # a kill while epoch 3's checkpoint was being written
    snapshot = latest_snapshot(str(backup))
    assert snapshot.epoch == 2 and [r["epoch"] for r in snapshot.rows] == [1, 2]
    assert latest_snapshot(str(tmp_path / "nowhere")) is None


def test_second_run_into_a_directory_in_use_refuses(tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(str(holder.pid))
        code, _, err = cli("run", "mlp-digits", "--epochs", 2, "--out", out, "--quiet")
        assert code == 2 and f"in use by another kzoo process (pid {holder.pid})" in err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert sorted(os.listdir(out)) == [LOCK]  # nothing started
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(str(dead.pid))
    with RunDir(str(out)) as run_dir:
        assert (out / LOCK).read_text() == str(os.getpid())
        run_dir.write_text("recipe.toml", "x = 1\n")
    assert not (out / LOCK).exists()


def test_unfinished_run_of_another_recipe_is_not_resumed(tmp_path, cli):
    out = tmp_path / "run"
    (out / BACKUP / "epoch-0001").mkdir(parents=True)
    (out / BACKUP / "epoch-0001" / "history.json").write_text("[]")
    (out / "recipe.toml").write_text('name = "something-else"\n')
    code, _, err = cli("run", "mlp-digits", "--epochs", 2, "--out", out, "--quiet")
    assert code == 2 and "unfinished run of a different recipe" in err and "--overwrite" in err
    assert not (out / "metrics.json").exists()


def test_finished_run_is_never_overwritten_without_flag(tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    code, _, err = cli("run", "mlp-digits", "--epochs", 2, "--out", out, "--quiet")
    assert code == 2 and "--overwrite" in err
    assert (out / "metrics.json").read_text() == "{}"


def test_epoch_order_depends_only_on_seed_and_epoch():
    from kzoo.data.core import make_epoch_dataset

    x = np.arange(23, dtype="float32").reshape(23, 1)
    y = np.arange(23)

    def epochs_of(initial_epoch, seed=3):
        ds = make_epoch_dataset(x, y, batch_size=5, seed=seed, epochs=4, initial_epoch=initial_epoch)
        labels = np.concatenate([b[1] for b in ds.as_numpy_iterator()])
        return labels.reshape(-1, 23)

    full, resumed = epochs_of(0), epochs_of(2)
    assert full.shape == (4, 23)
    np.testing.assert_array_equal(full[2:], resumed)  # a resumed run sees the same batches
    for epoch in full:
        assert sorted(epoch) == list(range(23))  # every example once per epoch
    assert len({tuple(e) for e in full}) == 4  # and a new order every epoch
    assert not np.array_equal(epochs_of(0, seed=4), full)


def test_dropout_masks_depend_on_epoch_only_and_never_repeat(tmp_path):
    import keras

    from kzoo.runs import resume_callbacks

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5, seed=1)])
    reseed = resume_callbacks(str(tmp_path / BACKUP))[0]
    reseed.set_model(model)
    reseed.on_train_begin()
    ones = np.ones((1, 64), "float32")

    def masks(epoch, n=8):
        reseed.on_epoch_begin(epoch)
        return [np.asarray(model(ones, training=True) != 0).tobytes() for _ in range(n)]

    drawn = [m for epoch in range(4) for m in masks(epoch)]
    assert len(set(drawn)) == len(drawn)  # no epoch replays another epoch's masks
    assert masks(2) == drawn[16:24]  # epoch 2 again (as after a resume): the same masks


# ---------------------------------------------------------------- staged fine-tuning
# Pretraining, a scratch baseline, then three stages (epochs 1-2, 3-5, 6-7), each with its own
# per-group rates and cosine schedule, and dropout: a small plan with all a resume must restore.
# Stages 2 and 3 train the same groups, so only the right optimizer per stage tells them apart.
STAGED = """
name = "staged-resume"
seed = 0

[data]
dataset = "digits"
batch_size = 64
standardize = "per_channel"

[model]
name = "mlp"
depth = 2
width = 16
dropout = 0.1

[optimizer]
name = "adam"

[schedule]
name = "cosine"

[finetune]
stages = ["head:2@1e-2", { trainable = "all", epochs = 3, lr = 5e-3, lr_factor = 0.5 }, "all:2@1e-3..5e-3"]
scratch_baseline = true

[finetune.pretrain]
dataset = "digits"
epochs = 1
"""
STAGED_KEYS = ("test_accuracy", "test_loss", "best_val_accuracy", "epochs_run", "params", "stage_boundaries",
               "pretrain_test_accuracy", "scratch_test_accuracy")
STAGE_2_RATES = {"stage1_block0_dense": 0.5, "stage1_block0_norm": 0.5, "stage0_block0_dense": 0.25,
                 "stage0_block0_norm": 0.25}  # x0.5 per group down from the head
STAGE_3_RATES = {"stage1_block0_dense": 0.2 ** (1 / 3), "stage1_block0_norm": 0.2 ** (1 / 3),
                 "stage0_block0_dense": 0.2 ** (2 / 3), "stage0_block0_norm": 0.2 ** (2 / 3)}  # 5e-3 to 1e-3


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The staged recipe's file and the directory of its uninterrupted run."""
    import kzoo.recipes

    root = tmp_path_factory.mktemp("staged")
    recipe = root / "staged.toml"
    recipe.write_text(STAGED)
    kzoo.recipes.run(kzoo.recipes.load(str(recipe)), out=str(root / "uninterrupted"), verbose=0)
    return recipe, root / "uninterrupted"


class Stopped(Exception):
    """Stands for a kill between two stages."""


def _spy_on_stages(monkeypatch, stop_at=None):
    """Records `(stage number, optimizer)` of every stage compiled; raises `Stopped` instead of
    compiling stage `stop_at` (a run stopped after the stage before it)."""
    from kzoo.train import loop

    compiled = []

    def compile_stage(model, recipe, stage, *args, **kwargs):
        if not recipe.finetune.stages:  # pretraining or the scratch baseline (one-stage plans)
            return compile_stage_as_shipped(model, recipe, stage, *args, **kwargs)
        number = parse_stages(recipe.finetune.stages).index(stage) + 1
        if number == stop_at:
            raise Stopped(number)
        groups = compile_stage_as_shipped(model, recipe, stage, *args, **kwargs)
        compiled.append((number, model.optimizer))
        return groups

    monkeypatch.setattr(loop, "compile_stage", compile_stage)
    return compiled


def _steps(out):
    return math.ceil(json.loads((out / "metrics.json").read_text())["num_train"] / 64)


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_sigkilled_staged_run_resumes_inside_its_stage_with_its_rates(staged, tmp_path, cli, monkeypatch):
    recipe, reference = staged
    killed = tmp_path / "killed"
    _sigkill_when_checkpointed(("run", recipe, "--out", killed, "--quiet"), killed, after=2)
    assert 2 < latest_snapshot(str(killed / BACKUP)).epoch < 5  # inside stage 2 (epochs 3-5)
    pretrained = (killed / "pretrained.keras").stat().st_mtime_ns

    compiled = _spy_on_stages(monkeypatch)
    code, out, err = cli("run", recipe, "--out", killed)
    assert code == 0, err
    epoch = json.loads((killed / "metrics.json").read_text())["resumed_after_epoch"]
    assert f"Resuming stage 2/3 after epoch {epoch} of 7 from {killed / BACKUP}." in out
    # Pretraining and the baseline are kept from the killed run; stage 1 is not trained again.
    assert "pretraining" not in out and "baseline:" not in out
    assert (killed / "pretrained.keras").stat().st_mtime_ns == pretrained
    assert [number for number, _ in compiled] == [2, 3]
    # Stage 2 went on with its per-group rates and its restored step count (3 epochs in all);
    # stage 3 started with its own rates and a new optimizer.
    (_, second), (_, third) = compiled
    assert type(second).__name__ == "KzooAdam" and second.lr_multipliers == pytest.approx(STAGE_2_RATES)
    assert third.lr_multipliers == pytest.approx(STAGE_3_RATES)
    assert int(second.iterations) == 3 * _steps(killed) and int(third.iterations) == 2 * _steps(killed)
    _assert_same_run(killed, reference, STAGED_KEYS)


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_staged_run_stopped_between_stages_resumes_at_the_next_one(staged, tmp_path, capsys, monkeypatch):
    import kzoo.recipes

    recipe, reference = staged
    recipe = kzoo.recipes.load(str(recipe))
    out = tmp_path / "stopped"
    _spy_on_stages(monkeypatch, stop_at=1)  # after pretraining and the baseline
    with pytest.raises(Stopped):
        kzoo.recipes.run(recipe, out=str(out))
    assert "pretraining" in capsys.readouterr().out and latest_snapshot(str(out / BACKUP)) is None
    _spy_on_stages(monkeypatch, stop_at=2)  # after stage 1's last epoch
    with pytest.raises(Stopped):
        kzoo.recipes.run(recipe, out=str(out))
    printed = capsys.readouterr().out
    assert "pretraining" not in printed and "baseline:" not in printed  # both kept
    assert latest_snapshot(str(out / BACKUP)).epoch == 2
    compiled = _spy_on_stages(monkeypatch)
    kzoo.recipes.run(recipe, out=str(out))
    assert f"Resuming stage 2/3 after epoch 2 of 7 from {out / BACKUP}." in capsys.readouterr().out
    assert [number for number, _ in compiled] == [2, 3]
    assert compiled[0][1].lr_multipliers == pytest.approx(STAGE_2_RATES)
    assert int(compiled[0][1].iterations) == 3 * _steps(out)  # a new optimizer for stage 2
    _assert_same_run(out, reference, STAGED_KEYS)


# ---------------------------------------------------------------- callbacks with state across epochs
# A small mlp-digits (8-10 epochs, ~2 s a run) whose callbacks act after a few epochs: a run
# stopped in-process right after a checkpoint stands for a kill there.
SMALL = {"model.depth": 1, "model.width": 32}
# Best val_accuracy at epoch 5 (by more than min_delta), none better by 0.02 after: stops after epoch 7 of 10.
EARLY_STOPPING = {**SMALL, "epochs": 10, "callbacks.early_stopping.monitor": "val_accuracy",
                  "callbacks.early_stopping.patience": 2, "callbacks.early_stopping.min_delta": 0.02}
# val_loss improves by less than min_delta at epochs 6 and 7: the rate is halved after each.
PLATEAU = {**SMALL, "epochs": 8, "callbacks.reduce_lr_on_plateau.patience": 1,
           "callbacks.reduce_lr_on_plateau.factor": 0.5, "callbacks.reduce_lr_on_plateau.min_delta": 0.1}
RUN_KEYS = ("test_accuracy", "test_loss", "best_val_accuracy", "epochs_run", "params")


def _stop_after_checkpoint(monkeypatch, tmp_path, epoch):
    """Makes the next run raise `Stopped` right after it checkpoints `epoch`."""
    from kzoo.runs import resume_callbacks

    backup = type(resume_callbacks(str(tmp_path / BACKUP))[1])
    on_epoch_end = backup.on_epoch_end

    def checkpoint_then_stop(self, e, logs=None):
        on_epoch_end(self, e, logs)
        if e + 1 == epoch:
            raise Stopped(epoch)

    monkeypatch.setattr(backup, "on_epoch_end", checkpoint_then_stop)


def _interrupted_run(monkeypatch, capsys, tmp_path, overrides, stops):
    """Runs mlp-digits with `overrides` into `tmp_path/uninterrupted`, then into
    `tmp_path/interrupted`, stopped right after each epoch in `stops` is checkpointed and run
    again; returns both directories and what the uninterrupted run printed."""
    import kzoo.recipes

    recipe = kzoo.recipes.load("mlp-digits", overrides)
    reference, out = tmp_path / "uninterrupted", tmp_path / "interrupted"
    kzoo.recipes.run(recipe, out=str(reference), verbose=0)
    printed = capsys.readouterr().out
    for epoch in stops:
        with monkeypatch.context() as m:
            _stop_after_checkpoint(m, tmp_path, epoch)
            with pytest.raises(Stopped):
                kzoo.recipes.run(recipe, out=str(out), verbose=0)
        assert latest_snapshot(str(out / BACKUP)).epoch == epoch
    kzoo.recipes.run(recipe, out=str(out), verbose=0)
    return out, reference, printed


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_early_stopping_resumed_stops_at_the_same_epoch_with_the_same_weights(tmp_path, monkeypatch, capsys):
    # Stopped after epoch 6 (best epoch 5, patience half used), then right after the checkpoint
    # of epoch 7, where it stops, before the fit ends.
    out, reference, _ = _interrupted_run(monkeypatch, capsys, tmp_path, EARLY_STOPPING, stops=(6, 7))
    assert json.loads((reference / "metrics.json").read_text())["epochs_run"] == 7  # 2 after the best
    assert json.loads((out / "metrics.json").read_text())["resumed_after_epoch"] == 7
    _assert_same_run(out, reference, RUN_KEYS)  # weights included: the best epoch's


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_reduce_lr_on_plateau_resumed_reduces_at_the_same_epochs(tmp_path, monkeypatch, capsys):
    # Stopped after epoch 6, right after the first reduction and one epoch before the second.
    out, reference, printed = _interrupted_run(monkeypatch, capsys, tmp_path, PLATEAU, stops=(6,))
    assert [line.split(":")[0] for line in printed.splitlines() if "ReduceLROnPlateau" in line] == [
        "Epoch 6", "Epoch 7"]
    _assert_same_run(out, reference, RUN_KEYS)  # history.csv's learning_rate column included


# The staged recipe, smaller, without pretraining or baseline, in two stages: early stopping ends
# stage 1 after epoch 6 of 8 (best epoch 4) and stage 2 starts from epoch 4's weights.
STAGED_EARLY_STOP = {**SMALL, "model.dropout": 0.0, "finetune.stages": ["all:8@3e-3", "all:2@1e-3"],
                     "finetune.scratch_baseline": False,
                     "finetune.pretrain.dataset": "", "callbacks.early_stopping.monitor": "val_accuracy",
                     "callbacks.early_stopping.patience": 2, "callbacks.early_stopping.min_delta": 0.02}


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_stage_stopped_early_resumes_at_the_next_stage_from_its_best_weights(tmp_path, monkeypatch):
    import kzoo.recipes

    (tmp_path / "staged.toml").write_text(STAGED)
    recipe = kzoo.recipes.load(str(tmp_path / "staged.toml"), STAGED_EARLY_STOP)
    kzoo.recipes.run(recipe, out=str(tmp_path / "uninterrupted"), verbose=0)
    assert json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())["stage_boundaries"] == [6]
    out = tmp_path / "stopped"
    _spy_on_stages(monkeypatch, stop_at=2)  # after the checkpoint of the epoch stage 1 stopped at
    with pytest.raises(Stopped):
        kzoo.recipes.run(recipe, out=str(out), verbose=0)
    assert latest_snapshot(str(out / BACKUP)).epoch == 6
    compiled = _spy_on_stages(monkeypatch)
    kzoo.recipes.run(recipe, out=str(out), verbose=0)
    assert [number for number, _ in compiled] == [2]  # stage 1 is over, not trained on
    _assert_same_run(out, tmp_path / "uninterrupted", STAGED_KEYS[:5] + ("stage_boundaries",))


# Samples every 7 steps, which does not divide an epoch's 20: a resumed monitor must go on
# counting steps where the stopped run was. Adaptive mode changes the rate through the
# schedule's multiplier and logs its own product of changes. (The gradient and activation
# monitors keep their samples and step count the same way.)
MONITORED = {**SMALL, "epochs": 2, "callbacks.update_ratio.every_n_steps": 7, "callbacks.update_ratio.adaptive": True}


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_update_ratio_monitor_resumed_samples_at_the_same_steps(tmp_path, monkeypatch, capsys):
    out, reference, printed = _interrupted_run(monkeypatch, capsys, tmp_path, MONITORED, stops=(1,))
    assert "UpdateRatioMonitor: step 7:" in printed  # the adaptive mode changed the rate in epoch 1
    with open(reference / "history.csv") as f:
        assert {"lr_multiplier", "update_ratio/median"} <= set(next(csv.reader(f)))
    _assert_same_run(out, reference, RUN_KEYS)
