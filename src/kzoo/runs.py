"""The run directory: where a run's artifacts go, written atomically, guarded by a lock."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field

import keras
import numpy as np

from kzoo.callbacks.lr_control import lr_multiplier, set_lr_multiplier
from kzoo.errors import RunDirError

# Everything a run, a staged fine-tuning run and `kzoo eval` write into a run directory:
# --overwrite removes them all, so no plot or evaluation of the earlier run outlives it.
ARTIFACTS = ("recipe.toml", "history.csv", "metrics.json", "model.keras", "curves.png", "dynamics.png",
             "pretrained.keras", "eval.json", "confusion.png", "reliability.png", "errors.png", "report.html",
             "mlflow.json")
LOCK = ".kzoo.lock"


def default_out(recipe_name: str, root: str = "runs") -> str:
    """`runs/<recipe>-<YYYYmmdd-HHMMSS>`, made unique if two runs start in the same second."""
    base = os.path.join(root, f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out, i = base, 1
    while os.path.exists(out):
        i += 1
        out = f"{base}-{i}"
    return out


def atomic_write(path: str, data: str | bytes):
    """Writes to a temporary file beside `path`, then renames it over `path`.

    A kill or a full disk leaves the previous version of `path` (or none) and no temporary
    file; a failed write raises `RunDirError`.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise _write_error(path, e) from None


def write_csv(path: str, rows: list[dict], columns=()):
    """Writes `rows` (dicts) as CSV, atomically: `columns`, then every other key in first-seen order."""
    columns = list(columns)
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def _remove_quietly(path: str):
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(path: str, e: OSError) -> RunDirError:
    return RunDirError(
        f"Could not write {os.path.basename(path)} ({e.strerror or e}); its previous version is "
        f"intact. Free space or fix permissions, then re-run the same command to resume. Received: {path}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """A run directory that refuses to overwrite an earlier run unless asked to.

    Args:
        path: the directory; created if missing.
        overwrite: replace the artifacts of an earlier run there. Defaults to `False`.
        resume: allow a directory holding an unfinished run of the same recipe. Defaults to `False`.
    """

    def __init__(self, path: str, overwrite: bool = False, resume: bool = False):
        self.path = path
        self.overwrite = overwrite
        self.resume = resume
        self._locked = False

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def existing_artifacts(self) -> list[str]:
        if not os.path.isdir(self.path):
            return []
        return [a for a in ARTIFACTS if os.path.exists(self.file(a))]

    def open(self):
        """Creates the directory and takes its lock; refuses to clobber a finished run."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"--out {self.path} is a file, not a directory.")
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        finished = os.path.exists(self.file("metrics.json"))
        existing = self.existing_artifacts()
        if existing and not self.overwrite and (finished or not self.resume):
            self.close()
            raise RunDirError(
                f"{self.path} already holds a run ({', '.join(existing)}). "
                "Pass --overwrite to replace it, or choose another --out."
            )
        if self.overwrite:
            for name in existing:
                os.remove(self.file(name))
            self.remove_backup()
        return self

    def check_same_recipe(self, recipe_toml: str):
        """Refuses to resume an unfinished run of a different recipe (or other overrides)."""
        path = self.file("recipe.toml")
        has_backup = os.path.isdir(self.file(BACKUP))
        if not os.path.exists(path) and not has_backup:
            return
        try:
            with open(path, encoding="utf-8") as f:
                same = f.read() == recipe_toml
        except OSError:
            same = False
        if not same:
            raise RunDirError(
                f"{self.path} holds an unfinished run of a different recipe; re-run the same "
                "command to resume it, or pass --overwrite to start again. "
                f"Received: --out {self.path}"
            )

    def remove_backup(self):
        """Deletes the checkpoints once the run's artifacts are written."""
        shutil.rmtree(self.file(BACKUP), ignore_errors=True)

    def _lock(self):
        lock = self.file(LOCK)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    with open(lock) as f:
                        pid = int(f.read().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunDirError(
                        f"{self.path} is in use by another kzoo process (pid {pid}). "
                        "Wait for it, or choose another --out."
                    ) from None
                os.remove(lock)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._locked = True
            return
        raise RunDirError(f"Could not lock {self.path}.")

    def close(self):
        if self._locked:
            try:
                os.remove(self.file(LOCK))
            except FileNotFoundError:
                pass
            self._locked = False

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def write_text(self, name: str, text: str):
        atomic_write(self.file(name), text)

    def write_json(self, name: str, obj):
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")

    def write_csv(self, name: str, rows: list[dict]):
        write_csv(self.file(name), rows)

    def save_model(self, model, name: str = "model.keras"):
        tmp = self.file(f"tmp-{os.getpid()}-{name}")
        try:
            model.save(tmp)
            os.replace(tmp, self.file(name))
        except OSError as e:
            _remove_quietly(tmp)
            raise _write_error(self.file(name), e) from None


def _numpy_scalar(obj):
    """`json.dumps`'s `default` for state read back as it was: numpy scalars become Python
    numbers, anything else JSON cannot hold is an error rather than its string."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# --- Resume after a kill -------------------------------------------------------------------
#
# A run checkpoints into `<out>/backup/` at the end of every epoch. Each checkpoint is a folder
# `epoch-NNNN` holding the weights (optimizer state included), Keras's training metadata, the
# history rows so far and the training state the weights file leaves out (`resume_state.json`,
# with its arrays in `resume_state.npz`): whether a callback stopped training, a schedule's
# learning-rate multiplier and the state of the callbacks that keep one across epochs
# (`kzoo.callbacks.ResumableCallback`). It is written as `epoch-NNNN.tmp` and renamed when
# complete, so a kill at any moment leaves either the previous checkpoint or the new one, never
# a mixture.
# Results a run computes once before training (a staged run's pretraining and scratch
# baseline) are kept beside the checkpoints as `<name>.json` (`cached_result`).

BACKUP = "backup"
_SNAPSHOT_PREFIX = "epoch-"
_WEIGHTS = "latest.weights.h5"
_STATE = "resume_state.json"
_STATE_ARRAYS = "resume_state.npz"


@dataclass
class Snapshot:
    """The newest complete checkpoint in a backup folder: the epochs finished, their rows and
    the training state (`{}` for a checkpoint written before kzoo saved it)."""

    path: str
    epoch: int
    rows: list
    state: dict = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        """Whether a callback (early stopping, the divergence guard) ended training at this epoch."""
        return bool(self.state.get("stop_training"))

    def load_arrays(self) -> dict:
        """The callbacks' arrays, `{key: array}`; `ValueError` when the file is damaged."""
        path = os.path.join(self.path, _STATE_ARRAYS)
        if not os.path.exists(path):
            return {}
        try:
            with np.load(path, allow_pickle=False) as saved:
                return {key: saved[key] for key in saved.files}
        except (zipfile.BadZipFile, KeyError, EOFError) as e:
            raise ValueError(f"{_STATE_ARRAYS}: {e}") from None

    def load_weights(self, model):
        """Loads the checkpoint's weights into `model`, and its optimizer state when `model` has
        a built optimizer (a model not compiled yet gets the weights only)."""
        _restoring(self.path, lambda: model.load_weights(os.path.join(self.path, _WEIGHTS)))

    def restore_callback(self, callback, key=None):
        """Puts back the state `callback` (a `ResumableCallback`) had at this checkpoint, saved
        under `key` (its `resume_key`); a callback absent from the checkpoint is left as it is."""
        key = key or callback.resume_key
        saved = self.state.get("callbacks", {}).get(key)
        if saved is not None:
            arrays = self.load_arrays()
            _restoring(self.path, lambda: callback.set_resume_state(saved["values"], _saved_weights(key, saved, arrays)))


def _saved_weights(key, saved, arrays) -> dict:
    """A callback's `{name: list of arrays or None}` from a checkpoint's state and arrays."""
    return {name: None if count is None else [arrays[f"{key}/{name}/{i}"] for i in range(count)]
            for name, count in saved["weights"].items()}


def _restoring(path: str, load):
    """Runs `load()`; a checkpoint that does not fit the model is one line naming the fix."""
    try:
        load()
    except (OSError, ValueError, KeyError) as e:  # KeyError: an array missing from resume_state.npz
        raise RunDirError(
            f"The checkpoint {path} cannot be restored ({str(e).splitlines()[0]}). Pass --overwrite to start again."
        ) from None


def latest_snapshot(backup_dir: str) -> Snapshot | None:
    """The newest complete checkpoint in `backup_dir`, or `None` when there is none."""
    if not os.path.isdir(backup_dir):
        return None
    done = []
    for name in os.listdir(backup_dir):
        suffix = name[len(_SNAPSHOT_PREFIX):]
        if name.startswith(_SNAPSHOT_PREFIX) and suffix.isdigit():
            done.append((int(suffix), os.path.join(backup_dir, name)))
    if not done:
        return None
    epoch, path = max(done)
    try:
        with open(os.path.join(path, "history.json"), encoding="utf-8") as f:
            rows = json.load(f)
        state = {}
        if os.path.exists(os.path.join(path, _STATE)):
            with open(os.path.join(path, _STATE), encoding="utf-8") as f:
                state = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"The checkpoint {path} is damaged ({e}). Pass --overwrite to start again.") from None
    return Snapshot(path=path, epoch=epoch, rows=rows[:epoch], state=state)


def cached_result(backup_dir: str, name: str, compute) -> dict:
    """`compute()`'s result, computed once per run: kept in `backup_dir/<name>.json` (written
    atomically) and read back by a resumed run instead of computing it again.

    Args:
        backup_dir: the run's checkpoint folder; `RunDir.remove_backup` deletes the result too.
        name: the result's file name, without `.json`.
        compute: returns a JSON-serializable dict.
    """
    path = os.path.join(backup_dir, f"{name}.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise RunDirError(f"The saved result {path} is damaged ({e}). Pass --overwrite to start again.") from None
    result = compute()
    os.makedirs(backup_dir, exist_ok=True)
    atomic_write(path, json.dumps(result))
    return result


def resume_callbacks(backup_dir: str | None, callbacks=(), rows=(), fields=None, restore=True) -> list:
    """`[EpochReseed(), EpochBackup(backup_dir, fields, restore, callbacks)]`: put them after
    `callbacks` in the fit's callback list, so the backup records the logs the other callbacks
    wrote and restores their state after their own `on_train_begin` has reset it. With no
    `backup_dir`, `EpochRows(rows, fields)` keeps the history rows without checkpoints."""
    if backup_dir is None:
        return [EpochReseed(), EpochRows(rows, fields)]
    return [EpochReseed(), EpochBackup(backup_dir, fields, restore, callbacks)]


def _record_row(callback, epoch, logs):
    """Keeps `callback.rows` one row per epoch: the epoch, `callback.fields`, the logs."""
    row = {"epoch": epoch + 1, **callback.fields}
    row.update({k: float(v) for k, v in (logs or {}).items()})
    callback.rows = callback.rows[:epoch] + [row]


class EpochBackup(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore` with crash-consistent checkpoints and the history rows.

    Keras writes the weights and then the epoch number in place, so a kill between the two
    would resume from the wrong epoch; here both go into a fresh folder that is renamed into
    place only when complete. `rows` holds one dict per finished epoch, restored ones
    included, so a resumed run can write a `history.csv` with every epoch once.

    Each checkpoint also holds what the weights file leaves out: the state of `callbacks`
    that keep one across epochs (those with `get_resume_state` / `set_resume_state`, see
    `kzoo.callbacks.ResumableCallback`), a `ScaledSchedule`'s learning-rate multiplier, and
    whether a callback stopped training. A resumed `fit` gets them back in `on_train_begin`,
    after the callbacks before the backup have reset themselves; one resumed from a
    checkpoint where training was stopped trains no further epoch.

    Args:
        backup_dir: the folder for checkpoints; the newest complete one is restored.
        fields: values put in every row after `epoch` (a staged run's `stage`). Defaults
            to `None` (none).
        restore: at the start of `fit`, load the newest checkpoint's weights, optimizer
            state and epoch; `False` only reads its rows, for a `fit` that starts where the
            checkpoint ends with a new optimizer (a staged run's next stage). Defaults to
            `True`.
        callbacks: the fit's other callbacks; the state of those that keep one is saved
            and, with `restore`, restored. Keys are their positions and class names, the
            same in a resumed run of the same recipe. Defaults to none.
    """

    def __init__(self, backup_dir, fields=None, restore=True, callbacks=()):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.fields = dict(fields or {})
        self.restore = restore
        self.rows = []
        # A callback with a `resume_key` (one that spans the stages of a plan) keeps it whatever
        # its position; the others are keyed by position and class.
        self.resumable = {getattr(cb, "resume_key", None) or f"{i}-{type(cb).__name__}": cb
                          for i, cb in enumerate(callbacks)
                          if hasattr(cb, "get_resume_state") and hasattr(cb, "set_resume_state")}

    def on_train_begin(self, logs=None):
        snapshot = latest_snapshot(self.backup_dir)
        self.rows = list(snapshot.rows) if snapshot else []
        if snapshot and self.restore:
            self._point_at(snapshot.path)
            _restoring(snapshot.path, self._load_model)
            self._current_epoch = snapshot.epoch
            _restoring(snapshot.path, lambda: self._restore_state(snapshot))

    def _restore_state(self, snapshot):
        state = snapshot.state
        if "lr_multiplier" in state:
            set_lr_multiplier(self.model.optimizer, state["lr_multiplier"])
        saved = state.get("callbacks", {})
        arrays = snapshot.load_arrays() if saved else {}
        for key, callback in self.resumable.items():
            if key in saved:
                callback.set_resume_state(saved[key]["values"], _saved_weights(key, saved[key], arrays))
        if snapshot.stopped:  # e.g. early stopping ended the run there: no further epoch
            self.model._initial_epoch = max(snapshot.epoch, int((self.params or {}).get("epochs") or 0))

    def on_train_end(self, logs=None):
        # Keras starts every later `fit` of this model at the restored epoch unless reset.
        self.model._initial_epoch = None
        super().on_train_end(logs)

    def _point_at(self, folder):
        self._weights_path = os.path.join(folder, _WEIGHTS)
        self._training_metadata_path = os.path.join(folder, "training_metadata.json")

    def on_epoch_end(self, epoch, logs=None):
        _record_row(self, epoch, logs)
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        final = os.path.join(self.backup_dir, f"{_SNAPSHOT_PREFIX}{self._current_epoch:04d}")
        tmp = f"{final}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.makedirs(tmp)
            self._point_at(tmp)
            super()._save_model()
            for written in (self._weights_path, self._training_metadata_path):
                _fsync(written)  # on disk before the rename, not just in the page cache
            atomic_write(os.path.join(tmp, "history.json"), json.dumps(self.rows))
            self._save_state(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)  # the commit point
        except OSError as e:  # a full disk: keep the previous checkpoint, stop with one line
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(final, e) from None
        self._point_at(final)
        for name in os.listdir(self.backup_dir):  # older checkpoints and stale temporaries
            if name.startswith(_SNAPSHOT_PREFIX) and name != os.path.basename(final):
                shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)

    def _save_state(self, folder):
        """Writes `resume_state.json` (and `.npz` for the callbacks' arrays) into `folder`."""
        state = {"stop_training": bool(self.model.stop_training),
                 "lr_multiplier": lr_multiplier(self.model.optimizer), "callbacks": {}}
        arrays = {}
        for key, callback in self.resumable.items():
            values, weights = callback.get_resume_state()
            state["callbacks"][key] = {"values": values,
                                       "weights": {n: None if w is None else len(w) for n, w in weights.items()}}
            arrays.update({f"{key}/{n}/{i}": a for n, w in weights.items() for i, a in enumerate(w or [])})
        atomic_write(os.path.join(folder, _STATE), json.dumps(state, default=_numpy_scalar))
        if arrays:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            atomic_write(os.path.join(folder, _STATE_ARRAYS), buffer.getvalue())


class EpochRows(keras.callbacks.Callback):
    """Keeps one history row per epoch (with `fields`) after `rows`, where no checkpoint is written."""

    def __init__(self, rows=(), fields=None):
        super().__init__()
        self.rows = list(rows)
        self.fields = dict(fields or {})

    def on_epoch_end(self, epoch, logs=None):
        _record_row(self, epoch, logs)


class EpochReseed(keras.callbacks.Callback):
    """Sets every random generator in the model (dropout, augmentation) at the start of each
    epoch to a state that depends only on the generator's own seed and the epoch.

    Keras saves weights and optimizer state but not generator states, so without this a
    resumed run would replay the masks of the first epoch. Epoch `e` of a generator seeded
    `s` draws from the stream `[hash(s, e), 0], [hash(s, e), 1], ...`: Keras's TF backend
    reduces both numbers modulo 2**31 - 2, so the epoch goes into the first one (a counter
    offset would wrap around onto earlier epochs' masks).
    """

    def on_train_begin(self, logs=None):
        # A generator's first element is its seed; `next()` only advances the second.
        self._begin = {v.path: keras.ops.convert_to_numpy(v) for v in self._states()}
        self._seeds = {path: int(state[0]) for path, state in self._begin.items()}

    def on_train_end(self, logs=None):
        # Back to the states found at the start, so that a later `fit` of this model (a
        # staged run's next stage) reads the same seeds, as a resumed run's fresh model does.
        for v in self._states():
            if v.path in self._begin:
                v.assign(self._begin[v.path])

    def _states(self):
        return [v for v in self.model.variables if v.name == "seed_generator_state"]

    def on_epoch_begin(self, epoch, logs=None):
        for v in self._states():
            own = self._seeds.setdefault(v.path, int(keras.ops.convert_to_numpy(v)[0]))
            mixed = int(np.random.SeedSequence([own % 2**32, epoch]).generate_state(1)[0]) % (2**31 - 2)
            v.assign(np.array([mixed, 0], dtype=v.dtype))


def averaged_weights(model) -> list:
    """`model.get_weights()`, with each weight the optimizer averages (`use_ema`) replaced by its
    average: the weights validation reads and the fit ends with."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "built", False):
        return model.get_weights()
    averages = {v.path: a for v, a in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)}
    return [keras.ops.convert_to_numpy(averages.get(v.path, v)) for v in model.weights]


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the highest `val_accuracy` (the first such epoch on a
    tie) across every stage of a plan, for `checkpoint = "best"`; `put_back` loads them.

    With `optimizer.ema` the weights kept are the averages validation measured. The state goes
    into every checkpoint under `resume_key` (`kzoo.runs.EpochBackup`), so a resumed run keeps
    the same best epoch and weights as an uninterrupted one. It is not reset by `fit`: one
    instance spans the stages.
    """

    monitor = "val_accuracy"
    resume_key = "best_weights"

    def __init__(self):
        super().__init__()
        self.best = -math.inf
        self.best_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self.best_weights = averaged_weights(self.model)

    def get_resume_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch}, {"best_weights": self.best_weights}

    def set_resume_state(self, values, weights):
        self.best, self.best_epoch = float(values["best"]), values["best_epoch"]
        self.best_weights = weights["best_weights"]

    def put_back(self, model):
        """Loads the best epoch's weights into `model`; returns that epoch (1-based), or `None`
        when no epoch was validated."""
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        return self.best_epoch


class FinalizeEMA(keras.callbacks.Callback):
    """At the end of a fit's last epoch (or the one a callback stops at), puts the optimizer's
    averages into the model, as Keras's `fit` does once the epochs are done: placed before the
    checkpoint (`EpochBackup`), that checkpoint then holds the weights the fit ends with."""

    def on_epoch_end(self, epoch, logs=None):
        last = self.model.stop_training or epoch + 1 >= (self.params or {}).get("epochs", epoch + 2)
        if last:
            self.model.optimizer.finalize_variable_values(self.model.trainable_weights)
