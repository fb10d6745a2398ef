"""Inference speed-up of `kzoo.zoo.fold_batchnorm` on cnn-digits and resnet20.

A script, not a test: `python benchmarks/fold_batchnorm.py [--batch 256] [--repeats 50]`.
For each model it prints the median (and minimum) time of one compiled forward pass on a batch,
before and after folding, measured in interleaved rounds, the speed-up of the medians, and the
largest difference of the outputs relative to their largest magnitude.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _models(batch_size):
    import numpy as np

    from kzoo.data import load_arrays
    from kzoo.recipes import load
    from kzoo.train import build_model
    from kzoo.zoo import create_model

    recipe = load("cnn-digits")
    arrays = load_arrays("digits")
    x = arrays.x_test[:batch_size].astype("float32")
    yield "cnn-digits", build_model(recipe, arrays), x
    rng = np.random.default_rng(0)
    yield "resnet20 (32x32x3)", create_model("resnet20", (32, 32, 3), 10), \
        rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype("float32")


# The models are untrained: their batch-norm statistics are randomized so folding has work to do.
NOTE = "baseline: the same model unfolded (untrained, batch-norm statistics randomized)"


def _randomize_bn(model):
    """Non-trivial batch-norm statistics (as training leaves them), so folding changes the
    arithmetic and the comparison of outputs means something."""
    from kzoo.testing import randomize_batchnorm

    randomize_batchnorm(model, mean_std=0.5, variance=(0.5, 2.0), gamma_std=0.2, beta_std=0.2)


def _timings(models, x, repeats):
    """Seconds per compiled forward pass of each model, measured in interleaved rounds so that
    load from other processes hits every model alike: (median, minimum) per model."""
    import numpy as np
    import tensorflow as tf

    t = tf.constant(x)
    fns = [tf.function(lambda v, m=m: m(v, training=False)) for m in models]
    for fn in fns:
        for _ in range(3):
            fn(t).numpy()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn(t).numpy()
            record.append(time.perf_counter() - start)
    return [(float(np.median(r)), float(np.min(r))) for r in times]


def measure(quick=False):
    """Result rows for `python -m benchmarks`: folded vs unfolded latency at batch 1 (goal 1.2x)
    and throughput at batch 256, per model."""
    import keras

    from benchmarks.harness import Result
    from kzoo.zoo import fold_batchnorm

    keras.utils.set_random_seed(0)
    repeats = 30 if quick else 100
    results = []
    for batch, goal in ((1, 1.2), (256, None)):
        for name, model, x in _models(batch):
            _randomize_bn(model)
            folded = fold_batchnorm(model)
            (orig, _), (fold, _) = _timings([model, folded], x, repeats)
            if batch == 1:
                results.append(Result(f"inference latency {name}, batch 1", "ms per batch, folded vs unfolded",
                                      fold * 1e3, orig * 1e3, "ms", goal=goal, higher_is_better=False,
                                      note=NOTE))
            else:
                results.append(Result(f"inference throughput {name}, batch {batch}", "samples/s, folded vs unfolded",
                                      batch / fold, batch / orig, "samples/s", goal=goal,
                                      note=NOTE))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from kzoo.zoo import fold_batchnorm

    keras.utils.set_random_seed(0)
    print(f"batch {args.batch}, {args.repeats} interleaved rounds; ms per forward pass, median (min)")
    print(f"{'model':20s} {'layers':>9s} {'original ms':>16s} {'folded ms':>16s} {'speed-up':>9s} {'max rel diff':>13s}")
    for name, model, x in _models(args.batch):
        _randomize_bn(model)
        folded = fold_batchnorm(model)
        a = np.asarray(model(x, training=False))
        b = np.asarray(folded(x, training=False))
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))
        (orig_med, orig_min), (fold_med, fold_min) = _timings([model, folded], x, args.repeats)
        layers = f"{len(model.layers)}->{len(folded.layers)}"
        print(f"{name:20s} {layers:>9s} {orig_med * 1e3:8.3f} ({orig_min * 1e3:6.3f}) {fold_med * 1e3:8.3f} "
              f"({fold_min * 1e3:6.3f}) {orig_med / fold_med:8.2f}x {rel:13.2e}")


if __name__ == "__main__":
    main()
