"""Strategies on CPU: a MirroredStrategy search over 2 logical CPUs, and multi-worker training."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import free_ports, kzoo_process

MIRRORED_SEARCH = textwrap.dedent("""
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from kzoo.recipes import load
    from kzoo.tuning import hypermodel
    from kzoo.tuning.search import search

    seen = []
    build = hypermodel.RecipeHyperModel.build

    def recording_build(self, hp):
        model = build(self, hp)
        batch = next(iter(self._trial.data.train))[0].shape[0]
        seen.append((tf.distribute.get_strategy().num_replicas_in_sync,
                     type(model.trainable_weights[0].value).__name__, batch))
        return model

    hypermodel.RecipeHyperModel.build = recording_build
    recipe = load(sys.argv[1], ["scale_batch_with_replicas=true"])
    result = search(recipe, max_trials=2, out=sys.argv[2], strategy="mirrored", verbose=0)
    print("BUILDS", seen)
    print("STATUS", sorted(t["status"] for t in result.trials))
""")


def test_mirrored_search_runs_trials_on_two_replicas(tiny_recipe, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SEARCH)
    proc = subprocess.run([sys.executable, str(script), tiny_recipe(), str(tmp_path / "m")], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    builds = ast.literal_eval(proc.stdout.split("BUILDS ", 1)[1].splitlines()[0])
    assert len(builds) == 2
    for replicas, variable_type, batch in builds:
        assert replicas == 2 and "Mirrored" in variable_type
        assert batch == 128  # data.batch_size 64 scaled by 2 replicas
    assert "STATUS ['completed', 'completed']" in proc.stdout


def test_multiworker_run_trains_two_processes_to_the_same_weights(tiny_recipe, tmp_path):
    import keras
    import numpy as np

    import kzoo.zoo  # noqa: F401  (registers the custom layers a saved model may hold)

    path = tiny_recipe(epochs=2)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(kzoo_process("run", path, "--set", 'strategy="multiworker"', "--out", tmp_path / f"w{index}",
                                  "--set", "callbacks.early_stopping.patience=5",
                                  "--set", "callbacks.early_stopping.restore_best_weights=false",
                                  "--set", "callbacks.update_ratio.every_n_steps=2",
                                  # the accuracy levers on the multi-worker step
                                  "--set", "optimizer.ema=0.9", "--set", 'checkpoint="best"',
                                  "--set", "loss.label_smoothing=0.1", "--set", 'loss.class_weight="balanced"',
                                  "--set", "data.augment.mixup=0.2",
                                  "--set", 'metrics=["accuracy", "top5", "macro_f1"]',
                                  "--quiet", env={"TF_CONFIG": tf_config}))
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    metrics = [json.loads((tmp_path / f"w{i}" / "metrics.json").read_text()) for i in range(2)]
    assert [m["worker_index"] for m in metrics] == [0, 1]
    assert all(m["replicas"] == 2 and m["num_workers"] == 2 for m in metrics)
    assert metrics[0]["test_accuracy"] == metrics[1]["test_accuracy"] > 0.3  # it learned, identically
    for i in range(2):  # the recipe's callbacks ran, and the run folder is like any other's
        out = tmp_path / f"w{i}"
        for name in ("report.html", "history.csv", "curves.png", "dynamics.png", "recipe.toml"):
            assert (out / name).is_file(), name
        header = (out / "history.csv").read_text().splitlines()[0].split(",")
        assert {"loss", "val_accuracy", "learning_rate", "update_ratio/median", "val_top5", "val_macro_f1"} <= set(header), header
        assert metrics[i]["epochs_run"] == 2
        assert metrics[i]["checkpoint"] == "best" and metrics[i]["best_epoch"] in (1, 2)
    assert metrics[0]["test_macro_f1"] == metrics[1]["test_macro_f1"]
    assert metrics[0]["best_epoch"] == metrics[1]["best_epoch"]
    models = [keras.saving.load_model(tmp_path / f"w{i}" / "model.keras") for i in range(2)]
    for a, b in zip(models[0].weights, models[1].weights):  # batch-norm statistics included
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


UPSTREAM_FIT = textwrap.dedent("""
    import numpy as np
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
    try:
        model.fit(np.zeros((16, 4)), np.zeros((16, 2)), batch_size=8, epochs=1, verbose=0)
        print("FIT-OK")
    except Exception as e:
        print("FIT-FAILED", type(e).__name__, str(e)[:300].replace("\\n", " "))
""")


@pytest.mark.slow
def test_upstream_model_fit_under_multiworker_still_fails(tmp_path):
    """keras-team/keras#20585, tensorflow/tensorflow#72388. When this test fails, `model.fit`
    works under MultiWorkerMirroredStrategy: kzoo's custom loop (`train_multiworker`) can go."""
    script = tmp_path / "fit.py"
    script.write_text(UPSTREAM_FIT)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "TF_CONFIG": json.dumps(
                                  {"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for out in outputs:
        assert "FIT-FAILED" in out, out[-2000:]
