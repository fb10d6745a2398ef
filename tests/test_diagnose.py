"""`kzoo diagnose init` reproduces the lectures' initialization findings (on a smaller net);
`kzoo diagnose RUN_DIR` and the chance check say when a run could not learn."""

import json
import os

import numpy as np
import pytest

from benchmarks.photos import make_photo_folder
from kzoo.diagnose import init_study, parse_pairs

PAIRS = [("small_normal", "tanh"), ("glorot_normal", "tanh"), ("glorot_normal", "relu"), ("he_normal", "relu"),
         ("lsuv", "tanh")]


@pytest.fixture(scope="module")
def study():
    return {(s.initializer, s.activation): s for s in init_study(PAIRS, depth=10, width=256, batch=256)}


def test_small_weights_collapse_tanh_activations(study):
    std = study["small_normal", "tanh"].act_std
    assert all(b < 0.5 * a for a, b in zip(std, std[1:]))  # shrinks at every layer
    assert std[-1] < 1e-4 * std[0]


def test_glorot_keeps_tanh_at_a_steady_scale(study):
    std = study["glorot_normal", "tanh"].act_std
    assert std[-1] > 0.3 * std[0] and std[-1] > 0.15
    assert all(b > 0.75 * a for a, b in zip(std, std[1:]))  # vs about 0.3 per layer with small weights


def test_glorot_shrinks_relu_and_he_keeps_it(study):
    glorot, he = study["glorot_normal", "relu"].act_std, study["he_normal", "relu"].act_std
    assert all(b < 0.85 * a for a, b in zip(glorot, glorot[1:]))  # about 1/sqrt(2) per layer
    assert glorot[-1] < 0.1 * glorot[0]
    assert 0.6 < he[-1] / he[0] < 1.6
    # The gradients follow: He's weight gradients are far larger than Glorot's at the first layer.
    assert study["he_normal", "relu"].grad_std[0] > 5 * study["glorot_normal", "relu"].grad_std[0]


def test_after_lsuv_every_layer_has_unit_variance(study):
    pre_var = np.square(study["lsuv", "tanh"].pre_std)
    assert np.all(np.abs(pre_var - 1) < 0.1)


def test_selu_with_lecun_normal_self_normalizes_through_30_layers():
    (s,) = init_study([("lecun_normal", "selu")], depth=30, width=256, batch=256)
    assert np.all(np.abs(s.act_mean) < 0.1)
    assert np.all(np.abs(np.array(s.act_std) - 1) < 0.1)


def test_cli_prints_the_table_and_writes_the_histograms(cli, tmp_path):
    png = tmp_path / "init.png"
    code, out, err = cli("diagnose", "init", "--pairs", "he_normal:relu,small_normal:tanh", "--depth", 4,
                         "--width", 64, "--batch", 64, "--out", png)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith(("he_normal", "small_normal"))]
    assert len(rows) == 8 and rows[0][:3] == ["he_normal", "relu", "1"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--pairs", "he_normal-relu"], "INITIALIZER:ACTIVATION"),
    (["--pairs", "he_normal:reluu"], "Unknown activation 'reluu'"),
    (["--depth", "0"], "depth=0"),
])
def test_cli_user_errors_exit_2(cli, tmp_path, args, message):
    code, out, err = cli("diagnose", "init", *args, "--out", tmp_path / "x.png")
    assert code == 2 and message in err and "Traceback" not in err


def test_parse_pairs():
    assert parse_pairs(" he_normal:relu , lsuv:tanh,") == [("he_normal", "relu"), ("lsuv", "tanh")]


# -- `kzoo diagnose RUN_DIR` and the chance check on real runs -----------------------------------

def _main_capturing_stderr(*args):
    """`kzoo ARGS...` in-process for a module-scoped fixture: (exit code, stderr)."""
    import contextlib
    import io

    from kzoo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def dead_run(tmp_path_factory):
    """A staged `kzoo run` whose zero weights give every example the same features, so the
    loss stays at ln 10 through both stages: (run folder, stderr)."""
    out = tmp_path_factory.mktemp("dead") / "run"
    code, err = _main_capturing_stderr(
        "run", "mlp-digits", "--set", "epochs=2", "--set", "model.initializer=zeros", "--set", "model.depth=1",
        "--set", "model.width=16", "--set", "jit_compile=false", "--set", "schedule={}",
        "--set", "finetune.stages=head:1@1e-3, all:1@1e-3", "--quiet", "--out", out)
    assert code == 0, err
    return out, err


def test_a_staged_run_at_chance_warns_once_and_records_it(dead_run):
    out, err = dead_run
    lines = [line for line in err.splitlines() if "at chance" in line]
    assert len(lines) == 1, err  # over the run's first two epochs, one per stage: not once per stage
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["at_chance"] is True and metrics["at_chance_cause"] == "constant_features"
    assert lines[0] == f"kzoo: warning: {metrics['at_chance_diagnosis']}"
    assert "nearly constant" in lines[0] and "ln 10 = 2.3026" in lines[0]
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert "loss_over_chance" in header


def test_diagnose_says_the_same_for_the_finished_run(cli, dead_run):
    out, _ = dead_run
    code, stdout, err = cli("diagnose", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert stdout.strip() == f"{out}: {metrics['at_chance_diagnosis']}"  # the probe batch re-read, the same spread


def test_diagnose_a_run_that_learned(cli, dead_run, tmp_path):
    import shutil

    out, _ = dead_run
    learned = tmp_path / "learned"
    shutil.copytree(out, learned)
    rows = (learned / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index("loss")
    falling = [rows[0]] + [",".join(str(loss) if i == column else v for i, v in enumerate(row.split(",")))
                           for row, loss in zip(rows[1:], (1.9, 0.8))]
    (learned / "history.csv").write_text("\n".join(falling) + "\n")
    code, stdout, err = cli("diagnose", learned)
    assert code == 0, err
    assert stdout.startswith(f"{learned}: not at chance: training loss 1.9000, 0.8000") and "ln 10 = 2.3026" in stdout


def test_diagnose_refuses_what_is_not_a_finished_run(cli, tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "history.csv").write_text("epoch,loss\n1,2.3\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "history.csv").write_text("epoch,accuracy\n1,0.1\n")
    (tmp_path / "bad" / "metrics.json").write_text('{"class_names": ["a", "b"]}')
    for path, message in ((tmp_path / "nowhere", "No such run directory"), (tmp_path / "half", "metrics.json is missing"),
                          (tmp_path / "bad", "damaged history.csv")):
        code, out, err = cli("diagnose", path)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, out, err = cli("diagnose", tmp_path / "half", "--depth", 3)
    assert code == 2 and "--depth: only for `kzoo diagnose init`" in err


@pytest.mark.slow  # about 50-80 s on 2 busy cores (MobileNetV2's first compiled step): .ci/run runs it
def test_random_mobilenetv2_on_photos_is_reported_at_chance(cli, tmp_path):
    """The issue's case: a random MobileNetV2 with frozen batch norm on real photos stays at ln 4."""
    photos = os.path.join(make_photo_folder(str(tmp_path / "photos"), train_per_class=12, test_per_class=0,
                                            size=64), "train")
    out = tmp_path / "run"
    code, stdout, err = cli("finetune", "--backbone", "MobileNetV2", "--weights", "none", "--data", photos,
                            "--image-size", 32, 32, "--stages", "head:2@1e-3", "--quiet", "--out", out)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "at chance" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("kzoo: warning: the run is at chance: training loss ") and "ln 4 = 1.3863" in lines[0]
    assert "frozen batch norm" in lines[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["at_chance"] is True and metrics["at_chance_cause"] == "constant_features"
    code, stdout, err = cli("diagnose", out)
    assert code == 0 and stdout.strip() == f"{out}: {metrics['at_chance_diagnosis']}", err
