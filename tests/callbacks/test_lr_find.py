"""The learning-rate range test: sweep, early stop, restored weights, suggestion, CLI."""

import keras
import numpy as np
import pytest


def _model(normalization=False):
    import keras

    layers = [keras.Input((8,)), keras.layers.Dense(16, name="hidden")]
    if normalization:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [keras.layers.Activation("relu"), keras.layers.Dense(3, activation="softmax", name="out")]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return model


def _data(n=256):
    rng = np.random.RandomState(0)
    x = rng.randn(n, 8).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")


def test_sweep_is_exponential_stops_on_blow_up_and_restores_the_model():
    from kzoo.callbacks import lr_find

    model = _model(normalization=True)
    before = [w.copy() for w in model.get_weights()]  # includes the batch-norm statistics
    result = lr_find(model, _data(), start_lr=1e-5, end_lr=100.0, num_steps=60, batch_size=32)
    lrs = np.asarray(result.lrs)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (100.0 / 1e-5) ** (1 / 59), rtol=1e-9)
    assert lrs[0] == pytest.approx(1e-5)
    assert result.stopped_early and len(lrs) < 60
    assert result.smoothed[-1] > 4 * min(result.smoothed[:-1])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations) == 0  # the model's own optimizer never stepped


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    from kzoo.callbacks.lr_finder import suggest_lr

    lrs = np.logspace(-6, 1, 71)
    # loss falls fastest at 1e-3 (a tanh step in log-rate), bottoms out, then blows up past 1
    loss = 2 - np.tanh(2 * (np.log10(lrs) + 3)) + np.where(lrs > 1, (np.log10(lrs)) * 20, 0)
    assert suggest_lr(lrs, loss) == pytest.approx(1e-3, rel=0.05)


def test_lr_find_needs_a_compiled_model_and_a_sane_range():
    import keras

    from kzoo.callbacks import lr_find

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled"):
        lr_find(model, _data())
    with pytest.raises(ValueError, match=r"Received: start_lr=1.0, end_lr=0.1"):
        lr_find(_model(), _data(), start_lr=1.0, end_lr=0.1)


def test_cli_writes_the_plot_and_applies_the_suggestion_to_a_recipe_copy(cli, tmp_path):
    from kzoo.recipes import load

    out = tmp_path / "lr"
    code, stdout, stderr = cli("lr-find", "mlp-digits", "--steps", 40, "--apply", "--out", out)
    assert code == 0, stderr
    assert (out / "lr_find.png").stat().st_size > 10_000
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "step,learning_rate,loss,smoothed_loss" and 5 < len(rows) <= 41
    line = next(line for line in stdout.splitlines() if line.startswith("suggested learning rate:"))
    suggestion = float(line.split()[3])
    copy = load(str(out / "recipe.toml"))
    assert copy.optimizer.lr == pytest.approx(suggestion)
    assert copy.model == load("mlp-digits").model
    assert 1e-7 <= suggestion <= 10


def test_cli_rejects_a_bad_range_with_exit_code_2(cli, tmp_path):
    code, _, stderr = cli("lr-find", "mlp-digits", "--start-lr", "0", "--out", tmp_path / "x")
    assert code == 2 and stderr.strip().endswith("Received: start_lr=0.0")


def test_lr_find_starts_from_the_weights_kzoo_run_starts_from(tmp_path, monkeypatch):
    from kzoo.commands.lr_find import find_lr
    from kzoo.recipes import load, run
    from kzoo.train.session import Session

    built = []
    original = Session.build

    def recording_build(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        built.append([np.array(w) for w in model.get_weights()])
        return model

    monkeypatch.setattr(Session, "build", recording_build)
    # A staged recipe with a scratch baseline: the run builds two models before the one it trains.
    recipe = load("transfer-mnist-digits", ['finetune.stages=["head:1@1e-3"]', "finetune.pretrain.epochs=1",
                                            "model.filters=[4, 8, 8]", "model.convs_per_stage=1",
                                            "finetune.pretrain.dataset=''"])
    run(recipe, out=str(tmp_path / "run"), verbose=0)
    trained_start = built[-1]  # the model the run trains: built last
    built.clear()
    policy = keras.config.dtype_policy().name
    find_lr(recipe, steps=5)
    # The recipe's precision (auto: bfloat16 where the CPU has it) is set for the sweep only.
    assert keras.config.dtype_policy().name == policy
    (swept_start,) = built
    assert len(swept_start) == len(trained_start)
    for a, b in zip(swept_start, trained_start):
        np.testing.assert_array_equal(a, b)
