"""[callbacks.tensorboard]: event files in the run folder that TensorBoard's own reader parses,
with the loss, the learning rate and the monitors' values; one log folder per tuner trial."""

import csv
import glob
import os

import pytest

from kzoo.errors import RecipeError

TINY = {"epochs": 3, "model.depth": 1, "model.width": 32}


def _events(folder):
    """`{tag: [(step, value), ...]}` of what `folder` holds, read with TensorBoard's event
    accumulator: a number for a scalar, None for a histogram or the model's config."""
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.TENSORS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        out[tag] = [(step, float(v) if v.ndim == 0 and np.issubdtype(v.dtype, np.floating) else None)
                    for step, v in values]
    return out


def test_run_logs_loss_learning_rate_and_update_ratio_that_tensorboard_reads(tmp_path):
    import kzoo.recipes

    out = tmp_path / "run"
    recipe = kzoo.recipes.load("mlp-digits", {**TINY, "callbacks.tensorboard.histogram_freq": 1,
                                              "callbacks.tensorboard.update_ratio_histograms": True,
                                              "callbacks.update_ratio.every_n_steps": 5})
    assert list(recipe.callbacks) == ["tensorboard", "update_ratio"]  # listed before the monitor it reads
    kzoo.recipes.run(recipe, out=str(out), verbose=0)

    train, val = _events(out / "tensorboard" / "train"), _events(out / "tensorboard" / "validation")
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for tag, column in (("epoch_loss", "loss"), ("epoch_learning_rate", "learning_rate"),
                        ("epoch_update_ratio/median", "update_ratio/median")):
        assert [step for step, _ in train[tag]] == [0, 1, 2], tag
        assert [v for _, v in train[tag]] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), tag
    assert [v for _, v in val["epoch_loss"]] == pytest.approx([float(r["val_loss"]) for r in rows], rel=1e-6)
    # The cosine schedule moves the rate; TensorBoard shows the epochs' own rates, as history.csv.
    assert len({v for _, v in train["epoch_learning_rate"]}) == 3
    assert len(train["update_ratio/log10"]) == 3
    assert any(tag.endswith("/histogram") and "kernel" in tag for tag in train)  # weight histograms


def test_update_ratio_histograms_need_the_monitor(tmp_path):
    import kzoo.recipes

    recipe = kzoo.recipes.load("mlp-digits", {**TINY, "callbacks.tensorboard.update_ratio_histograms": True})
    with pytest.raises(RecipeError, match="needs \\[callbacks.update_ratio\\]"):
        kzoo.recipes.run(recipe, out=str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()  # refused before training: nothing left behind


@pytest.mark.slow  # 30-150 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_each_tuner_trial_logs_into_its_own_folder(tmp_path):
    from kzoo.tuning.search import search

    recipe = tmp_path / "tiny.toml"
    recipe.write_text('name = "tiny"\nepochs = 1\n[model]\nname = "mlp"\ndepth = 1\nwidth = 16\n'
                      '[callbacks.tensorboard]\nwrite_graph = false\n'
                      '[tune]\n"model.width" = [8, 16]\n')
    search(str(recipe), tuner="grid", max_trials=2, out=str(tmp_path / "s"), verbose=0)
    folders = sorted(glob.glob(str(tmp_path / "s" / "**" / "trial_*" / "tensorboard"), recursive=True))
    assert len(folders) == 2
    for folder in folders:
        assert [step for step, _ in _events(os.path.join(folder, "train"))["epoch_loss"]] == [0]
