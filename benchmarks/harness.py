"""Timing helpers shared by the benchmarks: alternating pairs, medians, result rows."""

from __future__ import annotations

import platform
import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One line of the results table."""

    benchmark: str
    metric: str
    kzoo: float
    baseline: float
    unit: str
    goal: float | None = None
    higher_is_better: bool = True
    note: str = ""
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
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


def in_fresh_process(fn, *args):
    """`fn(*args)` in a new Python process (spawned, so nothing of this one's TensorFlow state
    is inherited); `fn` must be importable and its result picklable."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


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
