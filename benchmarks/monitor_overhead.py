"""Throughput of cnn-digits with the three training-dynamics monitors on vs off, in one process.

Usage:
    python benchmarks/monitor_overhead.py [--recipe cnn-digits] [--epochs 24]

One model trains for `--epochs` epochs; the monitors (UpdateRatioMonitor, GradientMonitor,
ActivationMonitor at their default sampling, probe batch as in `kzoo run`) see only every
other epoch. Alternating within one run means a shared machine's load drifts over both modes
alike. The first two epochs (tracing) are dropped; the ratio is the median epoch time
without monitors over the median with them, i.e. throughput on / throughput off, both in wall
time and in this process's CPU time (the steadier of the two when other jobs share the cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _alternator(monitors):
    import keras

    class Alternate(keras.callbacks.Callback):
        """Forwards batch hooks to the monitors in odd epochs only; times every epoch."""

        def __init__(self):
            super().__init__()
            self.times = {"on": [], "off": []}
            self.inside = {type(m).__name__: 0.0 for m in monitors}  # wall seconds in each monitor

        def set_model(self, model):
            super().set_model(model)
            for m in monitors:
                m.set_model(model)

        def set_params(self, params):
            super().set_params(params)
            for m in monitors:
                m.set_params(params)

        def on_train_begin(self, logs=None):
            for m in monitors:
                m.on_train_begin(logs)

        def on_epoch_begin(self, epoch, logs=None):
            self.mode, self.epoch = ("on" if epoch % 2 else "off"), epoch
            self._wall, self._cpu = time.perf_counter(), time.process_time()
            for m in monitors:
                m.on_epoch_begin(epoch, logs)

        def on_train_batch_begin(self, batch, logs=None):
            self._forward("on_train_batch_begin", batch, logs)

        def on_train_batch_end(self, batch, logs=None):
            self._forward("on_train_batch_end", batch, logs)

        def _forward(self, hook, batch, logs):
            if self.mode == "on":
                for m in monitors:
                    if self.epoch < 2:  # the first samples trace the monitors' functions
                        getattr(m, hook)(batch, logs)
                        continue
                    t = time.perf_counter()
                    getattr(m, hook)(batch, logs)
                    self.inside[type(m).__name__] += time.perf_counter() - t

        def on_epoch_end(self, epoch, logs=None):
            if self.mode == "on":
                for m in monitors:
                    m.on_epoch_end(epoch, logs)
            if epoch >= 2:
                self.times[self.mode].append((time.perf_counter() - self._wall, time.process_time() - self._cpu))

    return Alternate()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cnn-digits")
    parser.add_argument("--epochs", type=int, default=24)
    args = parser.parse_args(argv)

    import warnings

    import numpy as np

    from kzoo import data as kdata
    from kzoo.callbacks import RunContext, build_callbacks
    from kzoo.recipes import load
    from kzoo.train import build_model, compile_stage, plan, seed_everything

    warnings.simplefilter("ignore")
    recipe = load(args.recipe, [f"epochs={args.epochs}"])
    seed_everything(recipe.seed, recipe.deterministic)
    d = recipe.data
    splits = kdata.load(d.dataset, d.batch_size, None, d.validation_split, d.test_split, d.split_seed,
                        recipe.seed, None, d.cache, d.shuffle_buffer)
    arrays = splits.arrays
    model = build_model(recipe, arrays)
    steps = int(np.ceil(arrays.info.num_train / d.batch_size))
    compile_stage(model, recipe, plan(recipe)[0][0], None, steps)
    # built as a recipe's [callbacks.update_ratio], [callbacks.gradients], [callbacks.activations]
    # tables with no arguments would build them: default sampling and probe size
    context = RunContext(recipe=recipe, steps_per_epoch=steps,
                         probe=(arrays.x_train[:256].astype("float32"), arrays.y_train[:256]))
    monitors = build_callbacks({"update_ratio": {}, "gradients": {}, "activations": {}}, context)
    alternate = _alternator(monitors)
    model.fit(splits.train, epochs=args.epochs, callbacks=[alternate], verbose=0)

    wall = {k: statistics.median(t[0] for t in v) for k, v in alternate.times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in alternate.times.items()}
    n = arrays.info.num_train
    print(f"{args.recipe}: {args.epochs} epochs of {steps} steps, monitors on in every other epoch; "
          f"{len(alternate.times['on'])} + {len(alternate.times['off'])} epochs measured")
    print(f"  samples/s without monitors: {n / wall['off']:.0f} (wall), {n / cpu['off']:.0f} (CPU)")
    print(f"  samples/s with monitors:    {n / wall['on']:.0f} (wall), {n / cpu['on']:.0f} (CPU)")
    print(f"  samples taken: update ratio {len(monitors[0].trace)}, gradients {len(monitors[1].trace)}, "
          f"activations {len(monitors[2].trace)}")
    on_seconds = sum(t[0] for t in alternate.times["on"])
    print("  time inside the monitors' batch hooks, share of the monitored epochs: " + ", ".join(
        f"{k} {v / on_seconds:.1%}" for k, v in alternate.inside.items()))
    print(f"throughput ratio (on / off): {wall['off'] / wall['on']:.3f} wall, {cpu['off'] / cpu['on']:.3f} CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
