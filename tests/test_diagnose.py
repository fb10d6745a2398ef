"""`kzoo diagnose init` reproduces the lectures' initialization findings (on a smaller net)."""

import numpy as np
import pytest

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
