"""The training-throughput benchmark: its baseline is plain Keras as the issue defines it (the
recipe's model in stock layers at float32, the recipe's optimizer and batch size, numpy-fed
`fit`), and a row below its goal says what bounds it."""

import os
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from benchmarks import training  # noqa: E402
from benchmarks.results.render import goal_reason  # noqa: E402


def _small_cnn_recipe():
    import kzoo

    return kzoo.recipes.load("cnn-digits", ["model.filters=[8]", "model.convs_per_stage=1"])


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")
    training.set_determinism(False)


def test_baseline_is_the_recipe_model_in_stock_layers_at_float32_fed_numpy(float32_after):
    from kzoo.zoo.layers import FusedBatchNormalization

    recipe = _small_cnn_recipe()
    arrays = training.synthetic_arrays(64, shape=(8, 8, 1))
    k = training.kzoo_setup(recipe, arrays)
    model, feed = training.baseline_setup(recipe, arrays)

    kzoo_layers = list(k.model._flatten_layers(include_self=False))
    layers = list(model._flatten_layers(include_self=False))
    assert [la.name for la in layers] == [la.name for la in kzoo_layers]  # the same architecture
    assert any(isinstance(la, FusedBatchNormalization) for la in kzoo_layers)
    assert not any(isinstance(la, FusedBatchNormalization) for la in layers)
    assert sum(type(la) is keras.layers.BatchNormalization for la in layers) == \
        sum(isinstance(la, FusedBatchNormalization) for la in kzoo_layers)
    assert {la.dtype_policy.name for la in layers} == {"float32"}
    # Keras's own compile: no XLA on a CPU, one step per call; the recipe's optimizer.
    assert not model.jit_compile and model.steps_per_execution == 1
    assert type(model.optimizer) is type(k.model.optimizer)
    assert isinstance(feed.x, np.ndarray) and feed.x.dtype == np.float32
    assert feed.batch_size == recipe.data.batch_size == k.batch_size
    # the same starting weights, the adapted standardization statistics included
    for a, b in zip(model.get_weights(), k.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_op_time_shares_find_the_convolutions_in_a_conv_step_and_none_in_an_mlp():
    from kzoo.zoo.layers import FusedBatchNormalization

    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 10

    def shares(*layers):
        model = keras.Sequential([keras.Input((8, 8, 1)), *layers, keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=32, verbose=0)
        return training.op_time_shares(lambda: model.fit(x, y, batch_size=32, verbose=0))

    conv = shares(keras.layers.Conv2D(16, 3), FusedBatchNormalization())
    if not conv:
        pytest.skip("TensorFlow's profiler is unavailable here")
    assert sum(conv.values()) == pytest.approx(1.0, abs=0.01)
    assert conv["convolutions"] > 0 and conv["batch norm"] > 0
    dense = shares(keras.layers.Dense(16))
    assert dense["convolutions"] == 0 and dense["batch norm"] == 0


def test_bound_names_the_kernels_the_pipeline_and_what_keeps_xla_off():
    shares = {"convolutions": 0.6, "batch norm": 0.2, "input pipeline": 0.01, "other": 0.19}
    bound = training.bound_of(shares, 0.05, "XLA off: a (RandomTranslation) cannot be XLA-compiled", "mixed_bfloat16")
    assert bound.startswith("the convolution kernels 60% and batch norm 20% of kzoo's op time (oneDNN, mixed_bfloat16)")
    assert "(per-step overhead, unfused batch norm, float32) is in the other 20%" in bound
    assert "input pipeline 5% of an epoch" in bound and bound.endswith("(RandomTranslation) cannot be XLA-compiled")
    # no batch norm (Fixup), float32 compute: neither is named as something kzoo removes
    fixup = training.bound_of({**shares, "batch norm": 0.0, "convolutions": 0.9}, 0.05, "XLA on", "float32: auto")
    assert "batch norm" not in fixup and "(per-step overhead) is in the other 10%" in fixup
    assert training.bound_of(shares, 0.7, "XLA on", "float32").startswith("the input pipeline: 70%")
    row = {"benchmark": "train throughput x", "ratio": 1.5, "goal": 2.0, "details": {"bound": bound}}
    assert goal_reason(row) == f"bound by {bound}."
    assert goal_reason({"benchmark": "unknown row", "details": {}}) == "no explanation recorded yet."


def test_xla_status_says_which_layer_keeps_the_step_off_xla(float32_after):
    recipe = _small_cnn_recipe()
    k = training.kzoo_setup(recipe, training.synthetic_arrays(64, shape=(8, 8, 1)))
    status = training.xla_status(k.model, k.plan)
    assert status.startswith("XLA off")
    assert "convolutions stay on oneDNN" in status and "(RandomTranslation) cannot be XLA-compiled" in status


@pytest.mark.slow  # two compiled models, the timing loop and a profile
def test_throughput_row_below_its_goal_carries_its_bound(float32_after):
    recipe = _small_cnn_recipe()
    arrays = training.synthetic_arrays(128, shape=(8, 8, 1))
    result = training.throughput("tiny cnn", recipe, arrays, epochs=1, repeats=1, goal=1e9)
    assert result.kzoo > 0 and result.baseline > 0 and not result.meets_goal
    assert result.details["baseline_threads"] == "kzoo's" and result.details["ratio_same_threads"] == round(result.ratio, 3)
    assert "convolution" in result.details["bound"] and "RandomTranslation" in result.details["bound"]
    met = training.throughput("tiny cnn", recipe, arrays, epochs=1, repeats=1, goal=0.0)
    assert met.meets_goal and "bound" not in met.details


def test_plain_keras_runs_in_a_process_with_tensorflows_own_thread_pools():
    """The baseline's process gets `TF_NUM_*_THREADS=0` (TensorFlow's pools, which kzoo keeps
    when they are set); this process's environment is left as it was."""
    from benchmarks import harness

    before = os.environ.get("TF_NUM_INTRAOP_THREADS")
    got = harness.in_fresh_process(os.getenv, "TF_NUM_INTRAOP_THREADS", env=harness.TENSORFLOW_THREADS)
    assert got == "0" and os.environ.get("TF_NUM_INTRAOP_THREADS") == before
    from kzoo.cpu_threads import plan_threads

    assert plan_threads(64 * 8 * 8, 2, environ=harness.TENSORFLOW_THREADS).source == "environment"


def test_plain_keras_peer_measures_on_request_in_its_own_process():
    """The throughput rows' baseline side: set up once in a process of its own, one timed run
    per request, so kzoo's process can alternate with it round by round."""
    from benchmarks import harness

    before = os.environ.get("TF_NUM_INTRAOP_THREADS")
    tiny = ["model.filters=[8]", "model.convs_per_stage=1"]
    with harness.Peer(training.baseline_peer, "cnn-digits", tiny, None, 1, env=harness.TENSORFLOW_THREADS) as peer:
        assert os.environ.get("TF_NUM_INTRAOP_THREADS") == before
        assert peer.info >= 1  # epochs per run: at least the one asked for
        runs = [peer() for _ in range(2)]
    assert all(samples > 0 and cpu > 0 for samples, cpu in runs)
    with pytest.raises(RuntimeError, match="the peer process failed: ValueError"):
        harness.Peer(os.getenv, "HOME")  # a setup that does not return (measure, info)
