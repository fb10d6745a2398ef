"""kzoo.train.determinism: which step a model gets (XLA or op determinism), and same numbers twice."""


import keras
import numpy as np
import pytest

import kzoo
from kzoo.testing import run_without_timings
from kzoo.train.determinism import add_xla_flag, plan_step, seed_everything, set_op_determinism


@pytest.fixture(autouse=True)
def _op_determinism_off():
    yield
    set_op_determinism(False)  # it is process-wide: leave the next test as it found TensorFlow


def _model(*layers):
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for layer in layers:
        x = layer(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_a_compilable_model_gets_xla_without_op_determinism_and_keras_keeps_it():
    seed_everything(0, deterministic=True)
    model = _model(keras.layers.Dense(4))
    plan = plan_step(model, deterministic=True, jit_compile=True, device="cpu")
    assert (plan.jit_compile, plan.op_determinism, plan.mechanism, plan.note) == (True, False, "xla", "")
    plan.apply()
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=plan.jit_compile)
    assert model.jit_compile is True  # Keras would have switched XLA off under op determinism


def test_a_layer_without_an_xla_kernel_falls_back_to_op_determinism_and_says_which():
    model = _model(keras.layers.RandomTranslation(0.1, 0.1, name="shift"))
    plan = plan_step(model, deterministic=True, jit_compile=True, device="cpu")
    assert (plan.jit_compile, plan.op_determinism, plan.mechanism) == (False, True, "op_determinism")
    assert "shift (RandomTranslation)" in plan.note and "\n" not in plan.note


def test_convolutions_stay_off_xla_on_cpu_only():
    model = _model(keras.layers.Conv2D(4, 3))
    cpu = plan_step(model, deterministic=True, device="cpu")
    assert (cpu.jit_compile, cpu.op_determinism, cpu.mechanism) == (False, True, "op_determinism")
    assert plan_step(model, deterministic=True, device="gpu").mechanism == "xla"


def test_max_pooling_falls_back_only_on_gpu_in_deterministic_mode():
    model = _model(keras.layers.MaxPooling2D(2, name="pool"))
    assert plan_step(model, True, True, device="cpu").jit_compile
    gpu = plan_step(_model(keras.layers.Conv2D(4, 3), keras.layers.MaxPooling2D(2, name="pool")), True, True,
                    device="gpu")
    assert gpu.mechanism == "op_determinism" and "pool (MaxPooling2D" in gpu.note
    assert plan_step(model, False, True, device="gpu").jit_compile  # nondeterministic kernels allowed


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_not_deterministic_means_no_determinism_mechanism(device):
    blocked = plan_step(_model(keras.layers.RandomTranslation(0.1, 0.1)), deterministic=False, device=device)
    assert (blocked.jit_compile, blocked.op_determinism, blocked.mechanism) == (False, False, "none")
    free = plan_step(_model(), deterministic=False, device=device)
    assert (free.jit_compile, free.op_determinism, free.mechanism) == (True, False, "none")


def test_jit_compile_false_never_compiles_and_keeps_op_determinism_when_deterministic():
    plan = plan_step(_model(), deterministic=True, jit_compile=False, device="cpu")
    assert (plan.jit_compile, plan.op_determinism, plan.mechanism) == (False, True, "op_determinism")


def test_tpu_always_compiles_and_needs_no_op_determinism():
    plan = plan_step(_model(keras.layers.RandomTranslation(0.1, 0.1)), deterministic=True, device="tpu")
    assert (plan.jit_compile, plan.op_determinism, plan.mechanism) == (True, False, "xla")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="Received: device='npu'"):
        plan_step(_model(), device="npu")


def test_xla_flag_is_added_once_and_a_user_value_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert add_xla_flag("--xla_gpu_deterministic_ops=true") == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"
    assert add_xla_flag("--xla_gpu_deterministic_ops=true").count("deterministic") == 1
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")
    assert add_xla_flag("--xla_gpu_deterministic_ops=true") == "--xla_gpu_deterministic_ops=false"


def test_two_xla_compiled_fits_end_with_identical_weights():
    from kzoo.data import load_arrays

    arrays = load_arrays("digits")
    weights = []
    for _ in range(2):
        seed_everything(0, deterministic=True)
        model = _model(keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                       keras.layers.Dropout(0.2, seed=1))
        plan = plan_step(model, deterministic=True, device="cpu")
        plan.apply()
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=plan.jit_compile, steps_per_execution=4)
        model.fit(arrays.x_train[:512].astype("float32"), arrays.y_train[:512], batch_size=64, epochs=2,
                  shuffle=False, verbose=0)
        assert model.jit_compile
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["mlp-digits", pytest.param("cnn-digits", marks=pytest.mark.slow)])
def test_two_runs_of_a_fast_recipe_with_its_defaults_write_the_same_history_and_metrics(name, tmp_path):

    for out in ("a", "b"):
        kzoo.recipes.run(kzoo.recipes.load(name, ["epochs=2"]), out=str(tmp_path / out), verbose=0)
    rows_a, metrics_a = run_without_timings(tmp_path / "a")
    rows_b, metrics_b = run_without_timings(tmp_path / "b")
    assert len(rows_a) == 2 and "loss" in rows_a[0]
    assert rows_a == rows_b
    assert metrics_a == metrics_b


def test_auto_precision_computes_in_bfloat16_only_where_the_hardware_has_it(tmp_path, monkeypatch):
    from kzoo.train import distribution

    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_bf16\n")
    without.write_text("processor : 0\nflags : fpu sse2 avx2\n")
    assert distribution.cpu_has_bf16(str(with_bf16)) and not distribution.cpu_has_bf16(str(without))
    assert not distribution.cpu_has_bf16(str(tmp_path / "missing"))

    cnn, mlp = kzoo.recipes.load("cnn-digits"), kzoo.recipes.load("mlp-digits")
    staged, fixup = kzoo.recipes.load("transfer-mnist-digits"), kzoo.recipes.load("fixup-digits")
    assert cnn.mixed_precision == "auto"  # the default
    for kind, native, recipe, policy in [
            ("cpu", True, cnn, "mixed_bfloat16"), ("cpu", True, staged, "mixed_bfloat16"),
            ("cpu", True, mlp, None),  # XLA compiles an MLP's step; bfloat16 is slower there
            ("cpu", True, fixup, None),  # no normalization: float32 keeps its accuracy
            ("cpu", False, cnn, None), ("tpu", False, mlp, "mixed_bfloat16"),
            ("gpu", True, mlp, "mixed_bfloat16"), ("gpu", False, cnn, None)]:
        monkeypatch.setattr(distribution, "device_kind", lambda strategy, kind=kind: kind)
        monkeypatch.setattr(distribution, "cpu_has_bf16", lambda native=native: native)
        monkeypatch.setattr(distribution, "gpu_has_bf16", lambda native=native: native)
        assert distribution.precision_policy("auto", None, recipe) == policy, (kind, native, recipe.name)
        assert distribution.precision_policy("off", None, recipe) is None
        assert distribution.precision_policy("mixed_float16", None, recipe) == "mixed_float16"


def test_several_replicas_keep_the_step_off_xla_and_say_why():
    class TwoReplicas:  # stands in for a MirroredStrategy over two devices
        num_replicas_in_sync = 2

    plan = plan_step(_model(), deterministic=True, strategy=TwoReplicas(), device="gpu")
    assert (plan.jit_compile, plan.op_determinism, plan.mechanism) == (False, True, "op_determinism")
    assert "TwoReplicas with 2 replicas" in plan.note


def test_device_kind_of_the_default_strategy_is_this_machines():
    import tensorflow as tf

    from kzoo.train.determinism import device_kind

    expected = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    assert device_kind(tf.distribute.get_strategy()) == expected == device_kind()
