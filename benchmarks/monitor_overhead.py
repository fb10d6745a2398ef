"""Throughput of cnn-digits with the three training-dynamics monitors on vs off, in one process.

Usage:
    python -m benchmarks.monitor_overhead [--quick] [--recipe cnn-digits]

`python -m benchmarks` runs it as its `monitors` section. Four models with the same initial
weights train side by side: with and without the monitors (UpdateRatioMonitor,
GradientMonitor, ActivationMonitor at their default sampling, a 64-example probe as in `kzoo
run`, kzoo run's precision policy), each at one step per call and at kzoo's default `steps_per_execution` (the auto value,
which the monitors no longer lower). Each timed fit runs 100 steps (5 epochs of digits), the
gradient and activation monitors' default sampling interval, as one long run samples; the four
fits alternate in order, warm-up (tracing) excluded. A shared machine's speed drifts from one
second to the next, so the ratio is the median over many rounds of throughput on / throughput
off measured back to back in the same round, in wall time (the reported figure; the columns are
the medians of each side) and in this process's CPU time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MONITORS = {"update_ratio": {}, "gradients": {}, "activations": {}}  # each at its default sampling


def measure(recipe_name: str = "cnn-digits", quick: bool = False, repeats: int | None = None,
            steps_per_fit: int = 100, monitors: dict | None = None):
    """Monitors on vs off at one step per call and at the default steps per call.

    Args:
        recipe_name: the recipe whose model and data train. Defaults to `"cnn-digits"`.
        quick: fewer repeats. Defaults to `False`.
        repeats: rounds, each one timed fit of each of the four models. Defaults to 5 with
            `quick`, else 41.
        steps_per_fit: the least number of steps one timed fit runs (whole epochs). Defaults to
            100, the probe monitors' sampling interval.
        monitors: the `[callbacks]` tables that are on. Defaults to `MONITORS`.

    Returns:
        `(results, summary)`: two `harness.Result` rows (goal 0.95 each) and the dict
        `python -m benchmarks` writes under `"monitors"` in `results.json`.
    """
    import warnings

    import keras
    import numpy as np
    import tensorflow as tf

    import kzoo
    from benchmarks.harness import Result, alternate, median, paired_median
    from benchmarks.training import set_determinism
    from kzoo.callbacks import RunContext, build_callbacks
    from kzoo.data.core import make_dataset
    from kzoo.train import (
        build_model,
        compile_stage,
        plan,
        resolve_steps_per_execution,
        seed_everything,
    )
    from kzoo.train.distribution import apply_precision

    repeats = repeats or (5 if quick else 41)
    load_before = os.getloadavg()[0]
    recipe = kzoo.recipes.load(recipe_name)
    arrays = kzoo.data.load_arrays(recipe.data.dataset)
    policy = apply_precision(recipe.mixed_precision, tf.distribute.get_strategy(), recipe)  # as `kzoo run`
    d = recipe.data
    n = len(arrays.x_train)
    steps = int(np.ceil(n / d.batch_size))
    monitors_on = MONITORS if monitors is None else monitors
    epochs = max(1, -(-steps_per_fit // steps))
    ds = make_dataset(arrays.x_train, arrays.y_train, d.batch_size, True, recipe.seed)
    context = RunContext(recipe=recipe, steps_per_epoch=steps,
                         probe=(arrays.x_train[:256].astype("float32"), arrays.y_train[:256]))
    auto = resolve_steps_per_execution(recipe, steps, build_callbacks(monitors_on, context))
    if auto != resolve_steps_per_execution(recipe, steps):
        raise AssertionError(f"the monitors changed steps_per_execution from the default to {auto}")

    setups, attached = {}, {}
    warnings.simplefilter("ignore")  # the monitors' health warnings are not what is measured
    for spe in (1, auto):
        r = dataclasses.replace(recipe, steps_per_execution=spe)
        for on in (True, False):
            seed_everything(recipe.seed, recipe.deterministic)  # same initial weights for all four
            callbacks = build_callbacks(monitors_on, context) if on else []
            model = build_model(r, arrays)
            compile_stage(model, r, plan(r)[0][0], None, steps, callbacks)
            assert model.steps_per_execution == spe
            model.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)  # traces everything
            key = (spe, "on" if on else "off")
            setups[key], attached[key] = (model, callbacks), callbacks

    def timed(model, callbacks):
        def go():
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
            return n * epochs / (time.perf_counter() - wall), n * epochs / (time.process_time() - cpu)
        return go

    values = alternate({key: timed(*v) for key, v in setups.items()}, repeats)
    set_determinism(False)
    keras.mixed_precision.set_global_policy("float32")
    load_after = os.getloadavg()[0]
    results, summary = [], {"recipe": recipe_name, "default_steps_per_execution": auto, "goal": 0.95, "policy": policy,
                            "steps_per_fit": steps * epochs, "repeats": repeats,
                            "load_average": [round(load_before, 2), round(load_after, 2)]}
    for spe in (1, auto):
        on = [v[0] for v in values[(spe, "on")]]
        off = [v[0] for v in values[(spe, "off")]]
        cpu = paired_median([v[1] for v in values[(spe, "on")]], [v[1] for v in values[(spe, "off")]])
        samples = {type(m).__name__: len(m.trace) for m in attached[(spe, "on")]}
        label = "1" if spe == 1 else f"{spe} (kzoo's default)"
        results.append(Result(
            f"monitor overhead, {recipe_name}, steps_per_execution={label}",
            "samples/s, the three monitors on vs off", median(on), median(off), "samples/s", goal=0.95,
            note=f"CPU-time ratio {cpu:.2f}; {policy}; median of {repeats} rounds' ratios, fits of {steps * epochs} steps",
            details={"on": on, "off": off, "cpu_ratio": round(cpu, 3), "samples_in_last_fit": samples},
            paired_ratio=paired_median(on, off)))
        key = "steps_per_execution_1" if spe == 1 else "steps_per_execution_default"
        summary[key] = {"steps_per_execution": spe, "ratio": round(results[-1].ratio, 3),
                        "cpu_ratio": round(cpu, 3), "meets_goal": results[-1].meets_goal}
    return results, summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitor_overhead",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cnn-digits")
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 41")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of timed fits")
    args = parser.parse_args(argv)
    from benchmarks.harness import cpu_name

    results, summary = measure(args.recipe, args.quick, args.repeats)
    print(f"{cpu_name()}; load average {summary['load_average'][0]} -> {summary['load_average'][1]}")
    for r in results:
        print(f"{r.benchmark}: on {r.kzoo:.0f}, off {r.baseline:.0f} samples/s, ratio {r.ratio:.3f} "
              f"({'goal met' if r.meets_goal else 'goal NOT met'}); {r.note}; samples {r.details['samples_in_last_fit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
