"""Timing helpers shared by the benchmarks: alternating pairs, medians, result rows, and the
provenance every results file records."""

from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the results writers themselves write (figures, the pages rendered from them): a change
# there cannot change a measurement, so it does not make the tree count as changed.
OUTPUTS = ("docs/results", "benchmarks/results*", "benchmarks/scaling.png", "*.md")


@dataclass
class Result:
    """One line of the results table.

    `ratio` is `kzoo / baseline` (inverted where lower is better), unless the row sets
    `paired_ratio`: the median of ratios taken round by round in an alternating measurement
    (`paired_median`), which a drift in the machine's speed between rounds does not move.
    """

    benchmark: str
    metric: str
    kzoo: float
    baseline: float
    unit: str
    goal: float | None = None
    higher_is_better: bool = True
    note: str = ""
    details: dict = field(default_factory=dict)
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.higher_is_better:
            return self.kzoo / self.baseline if self.baseline else float("nan")
        return self.baseline / self.kzoo if self.kzoo else float("nan")

    @property
    def meets_goal(self):
        return None if self.goal is None else self.ratio >= self.goal

    def to_dict(self):
        return {**asdict(self), "ratio": round(self.ratio, 3), "meets_goal": self.meets_goal}


def alternate(fns: dict, repeats: int):
    """Calls each function `repeats` times in alternating order; returns name -> list of values.

    Alternation spreads drift (thermal, other processes) evenly over the contenders.
    """
    values = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            values[name].append(fns[name]())
    return values


def paired_median(numerators: list, denominators: list) -> float:
    """The median of `numerators[i] / denominators[i]`: values `alternate` took in the same round."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"needs equal, non-empty lists. Received: {len(numerators)} and {len(denominators)} values")
    return median([a / b for a, b in zip(numerators, denominators)])


# The environment of a process that trains as plain Keras does: TensorFlow's own thread pools
# (one thread per core each), which a kzoo run would otherwise size to its step (`kzoo.cpu_threads`).
TENSORFLOW_THREADS = {"TF_NUM_INTRAOP_THREADS": "0", "TF_NUM_INTEROP_THREADS": "0"}


def in_fresh_process(fn, *args, env=None):
    """`fn(*args)` in a new Python process (spawned, so nothing of this one's TensorFlow state
    is inherited), with `env` added to its environment; `fn` must be importable and its result
    picklable."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})  # a spawned child starts with the parent's environment
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            future = pool.submit(fn, *args)
            return future.result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Peer:
    """One side of a comparison, held in a spawned process of its own (with `env` added to its
    environment) and measured on request, so two processes with different thread pools can
    alternate round by round (`alternate`) while the other waits: each round's pair then meets
    the same machine.

    `setup(*args)` runs in the child, must be importable, and returns `(measure, info)`: each
    call of the peer runs `measure()` there and returns its (picklable) result; `info` is
    kept in `self.info`. Use it as a context manager.
    """

    def __init__(self, setup, *args, env=None):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        saved = {k: os.environ.get(k) for k in env or {}}
        os.environ.update(env or {})  # a spawned child starts with the parent's environment
        try:
            self._process = context.Process(target=_serve, args=(child, setup, args), daemon=True)
            self._process.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self.info = self._reply()

    def _reply(self):
        status, value = self._conn.recv()
        if status == "error":
            self.close()
            raise RuntimeError(f"the peer process failed: {value}")
        return value

    def __call__(self):
        self._conn.send("measure")
        return self._reply()

    def close(self):
        if self._process.is_alive():
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self._process.join(30)
            if self._process.is_alive():
                self._process.kill()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(conn, setup, args):
    """A `Peer`'s child: set up, then measure on each request until told to stop."""
    try:
        measure, info = setup(*args)
        conn.send(("ok", info))
        while conn.recv() == "measure":
            conn.send(("ok", measure()))
    except EOFError:
        pass
    except BaseException as e:  # the parent raises it with one line
        conn.send(("error", f"{type(e).__name__}: {e}"))


def median(xs):
    return statistics.median(xs)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("Intel(R) Xeon(R) Processor"), else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


@functools.lru_cache(maxsize=None)
def git_state() -> tuple[str, bool | None]:
    """`(commit, dirty)`: `git rev-parse HEAD` and whether the work tree differs from it.

    Dirty counts modified tracked files and untracked files git does not ignore (a module not
    added yet changes what runs just as an edit does), but not the results files and pages the
    writers produce (`OUTPUTS`). Without git (a copy of the tree with no `.git`), the commit is
    `$KZOO_COMMIT` when set, else `""`, and dirty is `None` (unknown). Cached, so a command that
    writes several files records the commit it started on.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        excludes = [f":(exclude){path}" for path in OUTPUTS]
        changes = subprocess.run(["git", "status", "--porcelain", "--", ".", *excludes], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("KZOO_COMMIT", ""), None
    return head, bool(changes)


def provenance(load_before: float | None = None) -> dict:
    """Where and when figures were measured: the fields every results file records.

    Args:
        load_before: the 1-minute load average when the measurement started; given, the
            `load_average` field is `[before, now]`. Defaults to `None`: the load average now.

    Returns:
        `{"commit", "dirty", "cpu", "load_average", "date"}`: the commit (`git_state`), whether
        the tree differed from it, the CPU model (`cpu_name`), the 1-minute load average (other
        jobs on the machine slow every timing) and the UTC date and time.
    """
    commit, dirty = git_state()
    now = round(os.getloadavg()[0], 2)
    return {"commit": commit, "dirty": dirty, "cpu": cpu_name(),
            "load_average": now if load_before is None else [round(load_before, 2), now],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def describe(data: dict) -> str:
    """`at commit abc1234 (with uncommitted changes)`, from a results file's provenance."""
    commit = data.get("commit") or ""
    if not commit:
        return "at an unrecorded commit"
    changed = " (with uncommitted changes)" if data.get("dirty") else ""
    return f"at commit {commit[:7]}{changed}"


def machine() -> str:
    import os

    import tensorflow as tf

    cpu = f"{cpu_name()}, {platform.machine()}"
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} CPU cores ({cpu}), {'GPU: ' + ', '.join(g.name for g in gpus) if gpus else 'no GPU'}, "
            f"tensorflow {tf.__version__}, Python {platform.python_version()}")


def markdown_table(results: list[Result]) -> str:
    lines = ["| benchmark | metric | kzoo | Keras baseline | ratio | goal | note |", "|---|---|---|---|---|---|---|"]
    for r in results:
        goal = "" if r.goal is None else f">= {r.goal:g} ({'met' if r.meets_goal else 'NOT met'})"
        lines.append(f"| {r.benchmark} | {r.metric} | {r.kzoo:.4g} {r.unit} | {r.baseline:.4g} {r.unit} | "
                     f"{r.ratio:.2f} | {goal} | {r.note} |")
    return "\n".join(lines)
