"""`kzoo predict` and `kzoo.predict`: a row per readable input with the run's class names, the
model's own probabilities for the images decoded as the run's data were, one warning naming the
unreadable files, and one-line errors for bad arguments."""

import csv
import os

import numpy as np
import pytest

COLOURS = {"blue": (30, 40, 210), "green": (30, 200, 40), "red": (220, 30, 30)}


def _pixels(colour, rng, size=(16, 16)):
    return np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 20, (*size, 3)), 0, 255).astype("uint8")


def _save(path, pixels):
    import tensorflow as tf

    encode = tf.io.encode_jpeg if str(path).endswith(".jpg") else tf.io.encode_png
    path.write_bytes(encode(pixels).numpy())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`(run_dir, model)`: a 3-epoch MLP trained on a folder of 3 colour classes (PNG and JPEG,
    16x16). No batch norm: its moving statistics need more steps than 3 epochs give."""
    import keras

    import kzoo

    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    for colour in COLOURS:
        (root / "train" / colour).mkdir(parents=True)
        for i in range(12):
            _save(root / "train" / colour / f"{i}.{'png' if i % 2 else 'jpg'}", _pixels(colour, rng))
    recipe = kzoo.recipes.load("mlp-digits", [f'data.dataset="{root / "train"}"', "data.image_size=[16, 16]",
                                              "epochs=3", "model.depth=1", "model.width=16",
                                              'model.normalization="none"', "data.batch_size=8",
                                              "optimizer.lr=0.01"])
    result = kzoo.recipes.run(recipe, out=str(root / "run"), verbose=0)
    assert result.metrics["test_accuracy"] == 1.0  # colours this far apart are learnt; labels below rely on it
    return str(root / "run"), keras.saving.load_model(root / "run" / "model.keras")


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _one_line_error(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kzoo: error:"), err
    return lines[0]


def test_folder_gives_a_row_per_readable_file_with_the_models_probabilities(run, tmp_path, cli):
    run_dir, model = run
    rng = np.random.default_rng(1)
    new = tmp_path / "new"
    (new / "sub").mkdir(parents=True)
    exact = {}  # files whose decoded pixels are known exactly (PNG is lossless)
    for colour in COLOURS:
        exact[str(new / f"{colour}.png")] = pixels = _pixels(colour, rng)
        _save(new / f"{colour}.png", pixels)
        _save(new / "sub" / f"{colour}.jpg", _pixels(colour, rng))
    grey = rng.integers(0, 255, (16, 16, 1)).astype("uint8")
    _save(new / "sub" / "grey.png", grey)
    exact[str(new / "sub" / "grey.png")] = np.repeat(grey, 3, axis=-1)  # as the folder source decodes it
    _save(new / "sub" / "big_red.png", _pixels("red", rng, size=(40, 24)))  # resized to 16x16
    (new / "x.png").write_bytes(np.random.default_rng(2).bytes(300))
    png = (new / "blue.png").read_bytes()  # header and end intact, data zeroed: fails only when decoded
    (new / "sub" / "damaged.png").write_bytes(png[:40] + bytes(len(png) - 80) + png[-40:])
    (new / "notes.txt").write_text("not an image")

    code, out, err = cli("predict", run_dir, new, "--out", tmp_path / "preds.csv", "--batch-size", 3)

    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    head, _, named = warnings[0].partition(": skipped 2 unreadable file(s): ")
    assert head == "kzoo: warning" and set(named.split(", ")) == {str(new / "x.png"), str(new / "sub" / "damaged.png")}
    columns, rows = _read_csv(tmp_path / "preds.csv")
    assert columns == ["path", "label", "probability"]
    by_path = {row["path"]: row for row in rows}
    expected = {str(new / f"{c}.png") for c in COLOURS} | {str(new / "sub" / f"{c}.jpg") for c in COLOURS}
    assert set(by_path) == expected | {str(new / "sub" / "grey.png"), str(new / "sub" / "big_red.png")}
    assert len(rows) == len(by_path)
    for colour in COLOURS:
        assert by_path[str(new / f"{colour}.png")]["label"] == colour
        assert by_path[str(new / "sub" / f"{colour}.jpg")]["label"] == colour
    assert by_path[str(new / "sub" / "big_red.png")]["label"] == "red"
    probs = model.predict(np.stack(list(exact.values())).astype("float32"), verbose=0)
    names = sorted(COLOURS)
    for path, p in zip(exact, probs):
        assert by_path[path]["label"] == names[p.argmax()]
        np.testing.assert_allclose(float(by_path[path]["probability"]), p.max(), atol=2e-6)


def test_the_python_api_returns_the_probabilities(run, tmp_path):
    import kzoo
    from kzoo.prediction import Predictions

    run_dir, model = run
    pixels = _pixels("green", np.random.default_rng(3))
    _save(tmp_path / "g.png", pixels)
    preds = kzoo.predict(run_dir, str(tmp_path / "g.png"))
    assert isinstance(preds, Predictions)
    assert preds.paths == [str(tmp_path / "g.png")] and preds.skipped == []
    assert preds.class_names == sorted(COLOURS)
    np.testing.assert_allclose(preds.probabilities, model.predict(pixels[None].astype("float32"), verbose=0),
                               atol=1e-6)
    assert preds.rows[0]["label"] == "green"


def test_npz_rows_and_top_k_columns(run, tmp_path, cli):
    run_dir, model = run
    rng = np.random.default_rng(4)
    x = np.stack([_pixels(c, rng) for c in ("red", "blue", "green", "red")]).astype("float32")
    npz = tmp_path / "new.npz"
    np.savez(npz, x=x, x_test=x[:1])  # `x` wins over `x_test`

    code, out, err = cli("predict", run_dir, npz, "--top", 2, "--out", tmp_path / "p.csv")

    assert code == 0, err
    columns, rows = _read_csv(tmp_path / "p.csv")
    assert columns == ["path", "label", "probability", "top1_label", "top1_probability", "top2_label",
                       "top2_probability"]
    assert [row["path"] for row in rows] == [f"{npz}[{i}]" for i in range(4)]
    assert [row["label"] for row in rows] == ["red", "blue", "green", "red"]
    probs = model.predict(x, verbose=0)
    names = sorted(COLOURS)
    for row, p in zip(rows, probs):
        first, second = np.argsort(-p)[:2]
        assert (row["top1_label"], row["top2_label"]) == (names[first], names[second])
        assert row["top1_label"] == row["label"] and row["top1_probability"] == row["probability"]
        np.testing.assert_allclose([float(row["top1_probability"]), float(row["top2_probability"])],
                                   [p[first], p[second]], atol=2e-6)


def test_model_file_names_classes_by_index_and_prints_a_table(run, tmp_path, cli):
    run_dir, _ = run
    np.savez(tmp_path / "a.npz", x_train=np.stack([_pixels("red", np.random.default_rng(5))]))
    code, out, err = cli("predict", os.path.join(run_dir, "model.keras"), tmp_path / "a.npz")
    assert code == 0, err
    header, rule, row = out.strip().splitlines()
    assert header.split() == ["path", "label", "probability"]
    assert row.split()[:2] == [f"{tmp_path / 'a.npz'}[0]", str(sorted(COLOURS).index("red"))]


def _bad_npz(tmp_path):
    np.savez(tmp_path / "small.npz", x=np.zeros((2, 8, 8, 1), "float32"))
    return tmp_path / "small.npz"


@pytest.mark.parametrize("case, match", [
    ("no_such_run", "No such run directory or model file"),
    ("no_files", "No image files"),
    ("missing_path", "No such file or folder"),
    ("wrong_npz_shape", "the model takes inputs of shape (16, 16, 3), the data has (8, 8, 1)"),
    ("npz_without_x", "holds none of the arrays x, x_test, x_train"),
    ("only_unreadable", "None of the 1 image file(s) could be read"),
    ("tta_without_augmentation", "--tta needs the recipe's augmentation"),
    ("top_too_large", "--top must be between 0 and the number of classes (3)"),
])
def test_bad_arguments_are_one_line_and_exit_2(run, tmp_path, cli, case, match):
    run_dir, _ = run
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    np.savez(tmp_path / "y_only.npz", y=np.zeros(3))
    good = tmp_path / "ok.png"
    _save(good, _pixels("red", np.random.default_rng(6)))
    args = {
        "no_such_run": [tmp_path / "nope", good],
        "no_files": [run_dir, tmp_path / "empty"],
        "missing_path": [run_dir, good, tmp_path / "gone.png"],
        "wrong_npz_shape": [run_dir, _bad_npz(tmp_path)],
        "npz_without_x": [run_dir, tmp_path / "y_only.npz"],
        "only_unreadable": [run_dir, tmp_path / "broken.png"],
        "tta_without_augmentation": [run_dir, good, "--tta", 2],
        "top_too_large": [run_dir, good, "--top", 4],
    }[case]
    code, out, err = cli("predict", *args, "--out", tmp_path / "p.csv")
    assert match in _one_line_error(code, err)
    assert not (tmp_path / "p.csv").exists()


def test_out_is_not_overwritten_without_overwrite(run, tmp_path, cli):
    run_dir, _ = run
    _save(tmp_path / "a.png", _pixels("blue", np.random.default_rng(7)))
    out = tmp_path / "preds.csv"
    out.write_text("earlier work\n")

    code, _, err = cli("predict", run_dir, tmp_path / "a.png", "--out", out)
    assert "--overwrite" in _one_line_error(code, err)
    assert out.read_text() == "earlier work\n"

    code, _, err = cli("predict", run_dir, tmp_path / "a.png", "--out", out, "--overwrite")
    assert code == 0, err
    assert [row["label"] for row in _read_csv(out)[1]] == ["blue"]
    assert sorted(os.listdir(tmp_path)) == ["a.png", "preds.csv"]  # no temporary file left behind
