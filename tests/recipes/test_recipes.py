"""Recipes as data: shipped ones validate, overrides are typed, resolved recipes round-trip."""

import pytest

from kzoo import recipes
from kzoo.errors import RecipeError


@pytest.mark.parametrize("name", recipes.list_recipes())
def test_shipped_recipes_validate_and_round_trip(name, tmp_path):
    recipe = recipes.load(name)
    path = tmp_path / "resolved.toml"
    path.write_text(recipe.to_toml())
    assert recipes.load(str(path)).to_dict() == recipe.to_dict()


def test_override_types_are_parsed_as_literals():
    r = recipes.load("cnn-digits", ["model.filters=[8, 16]", "data.augment.flip=horizontal",
                                    "optimizer.lr=1e-2", "epochs=3"])
    assert r.model["filters"] == [8, 16]
    assert r.data.augment.flip == "horizontal"
    assert r.optimizer.lr == 0.01 and r.epochs == 3


def test_int_accepted_for_float_but_not_float_for_int():
    assert recipes.load("mlp-digits", ["optimizer.lr=1"]).optimizer.lr == 1.0
    with pytest.raises(RecipeError, match="epochs must be an integer"):
        recipes.load("mlp-digits", ["epochs=2.5"])


def test_override_is_never_evaluated():
    with pytest.raises(RecipeError, match="must be an integer"):
        recipes.load("mlp-digits", ["epochs=__import__('os').getcwd()"])


def test_changing_model_keeps_only_valid_arguments():
    with pytest.raises(RecipeError, match="model.filters"):
        recipes.load("mlp-digits", ["model.filters=[8]"])
    r = recipes.load("mlp-digits", ["model.name=mlp_deep"])
    assert r.model["depth"] == 3  # the recipe's own value wins over the variant's default


def test_create_model_checks_arguments():
    from kzoo.errors import UserError
    from kzoo.zoo import create_model, list_models

    assert "mlp" in list_models("ml*") and "cnn" not in list_models("ml*")
    with pytest.raises(UserError, match="no argument 'widht'"):
        create_model("mlp", widht=3)
    model = create_model("mlp_deep", input_shape=(8, 8, 1), num_classes=10)
    assert sum(1 for layer in model.layers if layer.name.endswith("_dense")) == 11
