"""The run directory: where a run's artifacts go, written atomically, guarded by a lock."""

from __future__ import annotations

import csv
import io
import json
import os
import time

from kzoo.errors import RunDirError

ARTIFACTS = ("recipe.toml", "history.csv", "metrics.json", "model.keras", "curves.png")
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
    """Writes to a temporary file beside `path`, then renames it over `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        return self

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
        buf = io.StringIO()
        columns = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        self.write_text(name, buf.getvalue())

    def save_model(self, model, name: str = "model.keras"):
        tmp = self.file(f"tmp-{os.getpid()}-{name}")
        model.save(tmp)
        os.replace(tmp, self.file(name))


def _jsonable(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    return str(obj)


def history_rows(history: dict) -> list[dict]:
    """Turns Keras's `History.history` (metric -> list) into one row per epoch."""
    if not history:
        return []
    n = max(len(v) for v in history.values())
    rows = []
    for i in range(n):
        row = {"epoch": i + 1}
        for key, values in history.items():
            if i < len(values):
                row[key] = float(values[i])
        rows.append(row)
    return rows
