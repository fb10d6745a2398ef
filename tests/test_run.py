"""End-to-end `kzoo run`: artifacts, determinism, and never overwriting an earlier run."""

import csv
import json

import numpy as np
import pytest


def test_mlp_digits_end_to_end(cli, tmp_path):
    """The shipped recipe, unchanged, through the CLI: the real thing a user runs."""
    out = tmp_path / "run"
    code, stdout, err = cli("run", "mlp-digits", "--out", out, "--quiet")
    assert code == 0, err
    for name in ("recipe.toml", "history.csv", "metrics.json", "model.keras", "curves.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "best_val_accuracy", "epochs_run", "train_seconds",
                "samples_per_second", "seed", "versions"):
        assert key in metrics
    assert metrics["test_accuracy"] >= 0.97  # the bar for mlp-digits
    assert metrics["epochs_run"] == 30
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == 30
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[0] > lrs[-1]  # the cosine schedule shows in the history
    assert str(out) in stdout and "test accuracy" in stdout
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_loads_and_predicts_the_same(tmp_path):
    import keras

    import kzoo

    result = kzoo.recipes.run(kzoo.recipes.load("cnn-digits", ["epochs=1"]), out=str(tmp_path / "r"), verbose=0)
    x = result.model  # trained model in memory
    loaded = keras.models.load_model(tmp_path / "r" / "model.keras")
    from sklearn.datasets import load_digits

    images = load_digits().images[:32].astype("float32")[..., None]
    np.testing.assert_allclose(loaded.predict(images, verbose=0), x.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_same_seed_same_metrics(tmp_path):
    import kzoo

    a = kzoo.recipes.run(kzoo.recipes.load("mlp-digits", ["epochs=3"]), out=str(tmp_path / "a"), verbose=0)
    b = kzoo.recipes.run(kzoo.recipes.load("mlp-digits", ["epochs=3"]), out=str(tmp_path / "b"), verbose=0)
    assert round(a.metrics["test_accuracy"], 4) == round(b.metrics["test_accuracy"], 4)
    assert a.metrics["test_loss"] == pytest.approx(b.metrics["test_loss"], abs=1e-6)
    assert [r["loss"] for r in a.history] == pytest.approx([r["loss"] for r in b.history], abs=1e-6)


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_existing_run_is_not_overwritten(cli, tmp_path):
    out = tmp_path / "r"
    assert cli("run", "mlp-digits", "--epochs", 1, "--out", out, "--quiet")[0] == 0
    before = (out / "metrics.json").read_bytes()
    code, _, err = cli("run", "mlp-digits", "--epochs", 1, "--seed", 3, "--out", out, "--quiet")
    assert code == 2 and "--overwrite" in err
    assert (out / "metrics.json").read_bytes() == before
    (out / "dynamics.png").write_bytes(b"from an earlier run with monitors")
    (out / "eval.json").write_text("{}")
    code, _, _ = cli("run", "mlp-digits", "--epochs", 1, "--seed", 3, "--out", out, "--quiet", "--overwrite")
    assert code == 0
    assert not (out / "dynamics.png").exists() and not (out / "eval.json").exists()  # nothing stale left
    assert (out / "report.html").is_file()
    assert json.loads((out / "metrics.json").read_text())["seed"] == 3


def test_augmentation_only_in_training():
    """A plain model(x) call (probes, notebooks) must not augment; fit does."""
    import keras

    import kzoo
    from kzoo.train import build_model

    recipe = kzoo.recipes.load("cnn-digits", ["data.augment.translation=0.3", "data.augment.flip=horizontal"])
    arrays = kzoo.data.load_arrays("digits")
    model = build_model(recipe, arrays)
    x = arrays.x_test[:16]
    np.testing.assert_allclose(np.asarray(model(x)), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    aug = model.get_layer("augment_flip")
    assert not np.allclose(np.asarray(aug(x, training=True)), x) or not np.allclose(
        np.asarray(model.get_layer("augment_translate")(x, training=True)), x)
    loaded = keras.models.clone_model(model)
    assert loaded.get_layer("augment_translate").layer.name == "augment_translate_op"


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_multi_step_execution_trains_every_epoch_like_one_step_per_call(cli, tmp_path):
    """With batch 30, digits' 1,257 training images make 42 steps an epoch: auto picks 21 steps a
    call (a divisor), so no call borrows the next epoch's batches and every epoch trains."""
    import kzoo

    sets = ["epochs=4", "data.batch_size=30"]
    auto = kzoo.recipes.run(kzoo.recipes.load("mlp-digits", sets), out=str(tmp_path / "auto"), verbose=0)
    assert auto.model.steps_per_execution == 21
    one = kzoo.recipes.run(kzoo.recipes.load("mlp-digits", sets + ["steps_per_execution=1"]),
                           out=str(tmp_path / "one"), verbose=0)
    assert [r["loss"] for r in auto.history] == pytest.approx([r["loss"] for r in one.history], rel=1e-5)
    assert auto.metrics["test_loss"] == pytest.approx(one.metrics["test_loss"], rel=1e-5)

    code, _, err = cli("run", "mlp-digits", "--set", "data.batch_size=30", "--set", "steps_per_execution=32",
                       "--out", tmp_path / "bad", "--quiet")
    assert code == 2 and "steps_per_execution=32" in err and "42 steps" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "model.keras").exists()


def test_mixed_precision_run_leaves_the_global_dtype_policy_as_it_was(tmp_path):
    import keras

    import kzoo

    recipe = kzoo.recipes.load("mlp-digits", ["epochs=1", "mixed_precision='mixed_bfloat16'"])
    result = kzoo.recipes.run(recipe, out=str(tmp_path / "r"), verbose=0)
    assert result.model.dtype_policy.name == "mixed_bfloat16"  # the run trained in mixed precision
    assert keras.config.dtype_policy().name == "float32"  # and gave the notebook its policy back
