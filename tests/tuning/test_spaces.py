"""[tune] sections: validation, hyperparameter declaration, values back to recipes."""

import keras_tuner
import pytest

from kzoo.errors import RecipeError
from kzoo.recipes import load
from kzoo.recipes.schema import build_recipe
from kzoo.tuning.hypermodel import RecipeHyperModel
from kzoo.tuning.spaces import declare

BASE = {"name": "t", "model": {"name": "mlp", "depth": 2, "width": 64}, "optimizer": {"name": "adam", "lr": 0.003}}


def recipe_with(tune):
    return build_recipe({**BASE, "tune": tune})


@pytest.mark.parametrize("name", ["mlp-digits", "cnn-digits"])
def test_shipped_recipes_carry_valid_spaces(name):
    recipe = load(name)
    keys = set(recipe.tune)
    assert {"optimizer.lr", "model.dropout", "model.activation", "model.initializer", "model.normalization",
            "data.batch_size", "optimizer.name", "optimizer.weight_decay"} <= keys
    hp = keras_tuner.HyperParameters()
    values = declare(hp, recipe.tune, recipe.to_dict())
    # the untuned recipe is the search's default point
    assert values["optimizer.lr"] == pytest.approx(recipe.optimizer.lr)
    assert values["model.activation"] == recipe.model["activation"]
    assert values["data.batch_size"] == recipe.data.batch_size
    assert {p.name for p in hp.space} == keys


def test_long_form_survives_toml_round_trip(tmp_path):
    recipe = load("cnn-digits")
    path = tmp_path / "again.toml"
    path.write_text(recipe.to_toml())
    assert load(str(path)).tune == recipe.tune


@pytest.mark.parametrize("tune, message", [
    ({"optimizer.lrr": [0.1, 0.01]}, "Did you mean: optimizer.lr"),
    ({"model.depth": {"type": "int", "min": 4, "max": 2}}, "min=4, max=2"),
    ({"optimizer.lr": {"type": "float", "min": 0.0, "max": 0.1, "sampling": "log"}}, "min=0.0"),
    ({"model.depth": {"type": "integer", "min": 1, "max": 2}}, "type='integer'"),
    ({"model.depth": {"type": "int", "min": 1, "max": 3, "stepp": 1}}, "Unknown key 'tune.model.depth.stepp'"),
    ({"model.activation": ["relu", "nope"]}, "'nope' does not give a valid recipe"),
    ({"model.depth": [1, 0]}, "does not give a valid recipe"),
    ({"optimizer.lr": [0.01, "fast"]}, "one type"),
    ({"optimizer.momentum": {"type": "float", "min": 0.0, "max": 0.9, "when": {"optimizer.name": "sgd"}}},
     "'optimizer.name', which is not tuned"),
    ({"optimizer.name": ["adam", "sgd"],
      "optimizer.momentum": {"type": "float", "min": 0.0, "max": 0.9, "when": {"optimizer.name": "sgdd"}}},
     "never takes 'sgdd'"),
    ({"data": [1, 2]}, "not a recipe key"),
])
def test_bad_spaces_are_recipe_errors_naming_the_value(tune, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        recipe_with(tune)


def test_nested_tables_and_lists_are_accepted():
    recipe = recipe_with({"optimizer": {"lr": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"}},
                          "model.width": [32, 64]})
    assert recipe.tune["optimizer.lr"] == {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"}
    assert recipe.tune["model.width"] == {"type": "choice", "values": [32, 64]}


def test_conditional_entry_only_active_with_its_parent_value():
    recipe = recipe_with({
        "optimizer.name": ["adam", "sgd"],
        "optimizer.momentum": {"type": "float", "min": 0.5, "max": 0.9, "when": {"optimizer.name": "sgd"}},
    })
    hp = keras_tuner.HyperParameters()
    assert "optimizer.momentum" not in declare(hp, recipe.tune, recipe.to_dict())  # default is adam
    sgd = keras_tuner.HyperParameters()
    sgd.values["optimizer.name"] = "sgd"
    assert declare(sgd, recipe.tune, recipe.to_dict())["optimizer.momentum"] == pytest.approx(0.5)


def test_trial_values_become_the_recipe_including_list_choices():
    recipe = build_recipe({"name": "c", "model": {"name": "cnn"}, "tune": {
        "model.filters": [[8, 16], [16, 32, 64]], "optimizer.lr": {"type": "float", "min": 1e-3, "max": 1e-1},
        "model.convs_per_stage": {"type": "int", "min": 1, "max": 3},
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.25}}})
    hypermodel = RecipeHyperModel(recipe)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update({"model.filters": "[16, 32, 64]", "optimizer.lr": 0.05, "model.convs_per_stage": 3,
                      "model.dropout": 0.25})
    trial, values = hypermodel.trial_recipe(hp)
    assert trial.model["filters"] == [16, 32, 64]
    assert trial.optimizer.lr == 0.05 and trial.model["convs_per_stage"] == 3 and trial.model["dropout"] == 0.25
    assert trial.tune == recipe.tune


def test_strategy_fields_are_validated(cli, tmp_path):
    with pytest.raises(RecipeError, match="Did you mean: mirrored"):
        build_recipe({**BASE, "strategy": "mirored"})
    with pytest.raises(RecipeError, match="mixed_precision=fp16"):
        build_recipe({**BASE, "mixed_precision": "fp16"})
    code, _, err = cli("run", "mlp-digits", "--set", "strategy=tpuu", "--out", tmp_path / "r")
    assert code == 2 and "strategy=tpuu" in err and "Traceback" not in err


def test_tune_without_a_space_is_a_user_error(cli, tmp_path):
    code, _, err = cli("tune", "mlp-digits", "--set", "tune={}", "--out", tmp_path / "t")
    assert code == 2 and "no [tune] section" in err
