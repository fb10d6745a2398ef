"""The CLI's listing commands and every user error: exit code 2, one line, no traceback."""

import pytest


def test_list_recipes_shows_shipped_recipes(cli):
    code, out, _ = cli("list", "recipes")
    assert code == 0
    assert "mlp-digits" in out and "cnn-digits" in out


@pytest.mark.parametrize("what, expected", [
    ("models", ["mlp", "cnn"]),
    ("datasets", ["digits", "mnist-5k", "tensorflow-datasets"]),
    ("schedules", ["cosine", "piecewise"]),
    ("initializers", ["he_normal", "lecun_normal"]),
    ("activations", ["relu", "selu"]),
    ("norms", ["batch", "group"]),
])
def test_list_registries(cli, what, expected):
    code, out, _ = cli("list", what)
    assert code == 0
    for name in expected:
        assert name in out


def test_show_prints_resolved_recipe_with_overrides(cli):
    import tomllib

    code, out, _ = cli("show", "mlp-digits", "--set", "model.depth=5", "--set", "optimizer.lr=0.01")
    assert code == 0
    resolved = tomllib.loads(out)
    assert resolved["model"]["depth"] == 5
    assert resolved["optimizer"]["lr"] == 0.01
    # defaults of the model builder are filled in
    assert resolved["model"]["norm_position"] == "before"


def _one_line_error(code, err):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("kzoo: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_unknown_recipe_names_closest(cli):
    code, _, err = cli("run", "mlp-digit")
    msg = _one_line_error(code, err)
    assert "Unknown recipe 'mlp-digit'" in msg and "mlp-digits" in msg


def test_unknown_key_in_set_names_closest(cli):
    code, _, err = cli("show", "mlp-digits", "--set", "optimizer.learning_rte=0.1")
    msg = _one_line_error(code, err)
    assert "optimizer.learning_rte" in msg


def test_unknown_model_argument_names_closest(cli):
    code, _, err = cli("show", "mlp-digits", "--set", "model.depht=4")
    msg = _one_line_error(code, err)
    assert "model.depht" in msg and "depth" in msg


def test_wrong_type_names_key_and_value(cli):
    code, _, err = cli("show", "mlp-digits", "--set", "optimizer.lr=fast")
    msg = _one_line_error(code, err)
    assert "optimizer.lr must be a number" in msg and "'fast'" in msg


def test_bad_value_range(cli):
    code, _, err = cli("show", "mlp-digits", "--set", "optimizer.lr=-1")
    msg = _one_line_error(code, err)
    assert "optimizer.lr must be positive" in msg


def test_unknown_key_in_recipe_file(cli, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[model]\nname = "mlp"\n\n[data]\ndatset = "digits"\n')
    code, _, err = cli("show", path)
    msg = _one_line_error(code, err)
    assert "data.datset" in msg and "dataset" in msg


def test_malformed_toml(cli, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model\nname = ")
    code, _, err = cli("show", path)
    assert "not valid TOML" in _one_line_error(code, err)


def test_unknown_activation_in_recipe(cli):
    code, _, err = cli("show", "mlp-digits", "--set", "model.activation=relux")
    msg = _one_line_error(code, err)
    assert "relux" in msg and "relu" in msg


def test_missing_data_folder(cli, tmp_path):
    missing = tmp_path / "no-such-folder"
    code, _, err = cli("run", "mlp-digits", "--set", f'data.dataset="{missing}/"', "--out", tmp_path / "r")
    msg = _one_line_error(code, err)
    assert "No such data folder" in msg
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_offline_tfds_dataset_is_one_line(cli, tmp_path, monkeypatch):
    from kzoo.data import sources

    monkeypatch.setattr(sources, "can_download", lambda builder, timeout=3.0: False)
    code, _, err = cli("run", "mlp-digits", "--set", "data.dataset=mnist",
                       "--set", f'data.data_dir="{tmp_path}/tfds"', "--out", tmp_path / "r")
    msg = _one_line_error(code, err)
    assert "cannot be downloaded" in msg and "mnist" in msg
    assert not (tmp_path / "r").exists()
    assert not (tmp_path / "tfds" / "downloads").exists()


def test_unknown_tfds_dataset_names_closest(cli, tmp_path):
    code, _, err = cli("run", "mlp-digits", "--set", "data.dataset=mnistt", "--out", tmp_path / "r")
    msg = _one_line_error(code, err)
    assert "mnistt" in msg and "mnist" in msg


def test_debug_shows_traceback(cli):
    from kzoo.errors import RecipeError

    with pytest.raises(RecipeError):
        cli("--debug", "run", "no-such-recipe")


def test_python_m_kzoo_runs(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "kzoo", "show", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Unknown recipe 'nope'" in proc.stderr
