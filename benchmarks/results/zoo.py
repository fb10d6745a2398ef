"""Section `zoo`: parameter counts of the zoo's paper architectures next to the papers' figures,
the feature variance of Fixup and He-initialized ResNets at initialization, and the split sizes
of the bundled datasets. Nothing is trained; about a minute."""

from __future__ import annotations

import time

from benchmarks import results

# (model, classes, the paper's figure, where it is from)
PAPER_COUNTS = [
    ("resnet20", 10, 0.27e6, "He et al. 2016, Table 6"),
    ("resnet56", 10, 0.85e6, "He et al. 2016, Table 6"),
    ("resnet110", 10, 1.7e6, "He et al. 2016, Table 6"),
    ("densenet40", 10, 1.0e6, "Huang et al. 2017, Table 2"),
    ("densenet40", 100, 1.0e6, "Huang et al. 2017, Table 2"),
    ("densenet_bc100", 10, 0.8e6, "Huang et al. 2017, Table 2"),
    ("densenet_bc100", 100, 0.8e6, "Huang et al. 2017, Table 2"),
]
VARIANCE_MODELS = ("fixup_resnet20", "fixup_resnet110", "nonorm_resnet110")


def trainable(model) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def feature_variance(model, x) -> float:
    """Variance of the pooled features the classifier sees."""
    import keras
    import numpy as np

    features = keras.Model(model.input, model.get_layer("head_pool").output)
    return float(np.var(keras.ops.convert_to_numpy(features(x)).astype("float64")))


def measure() -> dict:
    import keras
    import numpy as np

    from kzoo.data import load
    from kzoo.zoo import create_model

    started = time.perf_counter()
    counts = []
    for name, classes, paper, source in PAPER_COUNTS:
        keras.backend.clear_session()
        n = trainable(create_model(name, (32, 32, 3), classes))
        counts.append({"model": name, "classes": classes, "trainable": n, "paper": paper, "source": source,
                       "relative_difference": round((n - paper) / paper, 5)})
    keras.backend.clear_session()
    ours = create_model("resnet50", (32, 32, 3), 10).count_params()
    reference = keras.applications.ResNet50(weights=None, classes=10, input_shape=(32, 32, 3)).count_params()
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    variance = {}
    for name in VARIANCE_MODELS:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        v = feature_variance(create_model(name, (16, 16, 3), 10), x)
        variance[name] = v if np.isfinite(v) else "inf"
    splits = {}
    for dataset in ("digits", "mnist-5k"):
        info = load(dataset).info
        splits[dataset] = {k: getattr(info, k) for k in ("num_train", "num_val", "num_test") if hasattr(info, k)}
    payload = {**results.header("zoo", time.perf_counter() - started), "input_shape": [32, 32, 3],
               "parameter_counts": counts,
               "resnet50": {"kzoo": int(ours), "keras_applications": int(reference), "classes": 10},
               "init_variance": {"input": "8 random normal 16x16x3 images, seed 0", "variance": variance},
               "splits": splits}
    results.write("zoo", payload)
    return payload
