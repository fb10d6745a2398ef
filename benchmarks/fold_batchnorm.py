"""Inference speed-up of `kzoo.zoo.fold_batchnorm` on cnn-digits and (when registered) resnet20.

A script, not a test: `python benchmarks/fold_batchnorm.py [--batch 256] [--repeats 50]`.
For each model it prints the median time of one compiled forward pass on a batch, before and
after folding, the speed-up, and the largest relative difference of the outputs.
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
    from kzoo.recipes.runner import build_model
    from kzoo.zoo import create_model, list_models

    recipe = load("cnn-digits")
    arrays = load_arrays("digits")
    x = arrays.x_test[:batch_size].astype("float32")
    yield "cnn-digits", build_model(recipe, arrays), x
    if "resnet20" in list_models():
        rng = np.random.default_rng(0)
        yield "resnet20 (32x32x3)", create_model("resnet20", (32, 32, 3), 10), \
            rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype("float32")
    else:
        print("resnet20 is not registered in this checkout: skipped")


def _randomize_bn(model, seed=0):
    """Trained-looking statistics, so the comparison of outputs means something."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2, n))
            layer.gamma.assign(rng.normal(1, 0.2, n))
            layer.beta.assign(rng.normal(0, 0.2, n))


def _median_seconds(model, x, repeats):
    import numpy as np
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=False))
    t = tf.constant(x)
    for _ in range(3):
        fn(t).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(t).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from kzoo.zoo import fold_batchnorm

    keras.utils.set_random_seed(0)
    print(f"{'model':22s} {'layers':>13s} {'original ms':>12s} {'folded ms':>10s} {'speed-up':>9s} {'max rel diff':>13s}")
    for name, model, x in _models(args.batch):
        _randomize_bn(model)
        folded = fold_batchnorm(model)
        a = np.asarray(model(x, training=False))
        b = np.asarray(folded(x, training=False))
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))
        original_s, folded_s = _median_seconds(model, x, args.repeats), _median_seconds(folded, x, args.repeats)
        layers = f"{len(model.layers)} -> {len(folded.layers)}"
        print(f"{name:22s} {layers:>13s} {original_s * 1e3:12.3f} {folded_s * 1e3:10.3f} "
              f"{original_s / folded_s:8.2f}x {rel:13.2e}")


if __name__ == "__main__":
    main()
