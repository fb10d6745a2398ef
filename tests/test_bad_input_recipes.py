"""Property tests: every malformed recipe ends with exit code 2 and one line naming the key,
never a traceback and never a started training."""

import copy
import math

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kzoo.recipes.loader import read_raw, tomllib

BASE, _ = read_raw("mlp-digits")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UNKNOWN_NAME = st.from_regex(r"zz[a-z0-9_]{0,10}", fullmatch=True)  # never a registered name
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@pytest.fixture
def attempt(tmp_path, cli, monkeypatch):
    """Runs `kzoo run` on a recipe (a dict or raw TOML text); fails the test if training starts."""
    import kzoo.recipes.runner as runner

    def no_training(*args, **kwargs):
        raise AssertionError("training started for a recipe that should have been refused")

    monkeypatch.setattr(runner, "train", no_training)
    path = tmp_path / "recipe.toml"

    def run(recipe):
        path.write_text(recipe if isinstance(recipe, str) else tomli_w.dumps(recipe), encoding="utf-8")
        code, out, err = cli("run", path, "--out", tmp_path / "out", "--quiet")
        assert code == 2, (code, err)
        assert err.startswith("kzoo: error: ") and err.endswith("\n") and err.count("\n") == 1, err
        assert "Traceback" not in err and not (tmp_path / "out").exists()
        return err

    return run


def _set(raw, path, value):
    raw = copy.deepcopy(raw)
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def _valid_keys(section):
    from dataclasses import fields

    from kzoo.callbacks.schedules import schedule_defaults
    from kzoo.recipes.schema import AugmentConfig, DataConfig, OptimizerConfig, Recipe
    from kzoo.zoo import model_defaults

    return {
        "": {f.name for f in fields(Recipe)},
        "data": {f.name for f in fields(DataConfig)},
        "data.augment": {f.name for f in fields(AugmentConfig)},
        "optimizer": {f.name for f in fields(OptimizerConfig)},
        "model": set(model_defaults("mlp")) | {"name"},
        "schedule": set(schedule_defaults("cosine")) | {"name"},
    }[section]


@SETTINGS
@given(section=st.sampled_from(["", "data", "data.augment", "optimizer", "model", "schedule"]),
       key=st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True))
def test_unknown_keys(attempt, section, key):
    assume(key not in _valid_keys(section))
    path = f"{section}.{key}".lstrip(".")
    assert f"Unknown key '{path}'" in attempt(_set(BASE, path, 1))


# Typed fields and values of every other TOML type (ints count as floats, so not offered there).
TYPED = {
    "epochs": int, "seed": int, "data.batch_size": int, "data.validation_split": float,
    "data.standardize": str, "data.cache": bool, "data.image_size": list, "optimizer.lr": float,
    "optimizer.nesterov": bool, "optimizer.name": str, "model.depth": int, "model.width": int,
    "model.dropout": float, "model.norm_position": str, "schedule.warmup_epochs": float,
    "data.augment.crop": int,
}
VALUES = {
    int: st.integers(-5, 500), float: st.floats(-10, 10, allow_nan=False), str: TEXT,
    bool: st.booleans(), list: st.lists(st.integers(0, 9), max_size=3),
    dict: st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers(), min_size=1, max_size=2),
}


@st.composite
def wrong_type(draw):
    path = draw(st.sampled_from(sorted(TYPED)))
    kind = TYPED[path]
    others = [t for t in VALUES if t is not kind and not (kind is float and t is int)]
    return path, draw(VALUES[draw(st.sampled_from(others))])


@SETTINGS
@given(case=wrong_type())
def test_wrong_types(attempt, case):
    path, value = case
    assert path in attempt(_set(BASE, path, value))


OUT_OF_RANGE = {
    "optimizer.lr": st.floats(max_value=0) | st.just(math.inf),
    "data.batch_size": st.integers(max_value=0),
    "model.dropout": st.floats(min_value=1) | st.floats(max_value=-1e-9) | st.just(math.nan),
    "epochs": st.integers(max_value=0),
    "optimizer.momentum": st.floats(min_value=1) | st.floats(max_value=-1e-9),
    "data.validation_split": st.floats(min_value=1, allow_infinity=False) | st.floats(max_value=-1e-9, allow_infinity=False),
    "seed": st.integers(max_value=-1),
    "model.depth": st.integers(max_value=0),
    "model.width": st.integers(max_value=0),
    "model.bn_momentum": st.floats(min_value=1, allow_infinity=False),
    "data.augment.rotation": st.floats(min_value=1, allow_infinity=False),
    "schedule.warmup_epochs": st.floats(max_value=-1e-9, allow_infinity=False),
}


@SETTINGS
@given(case=st.sampled_from(sorted(OUT_OF_RANGE)).flatmap(lambda p: st.tuples(st.just(p), OUT_OF_RANGE[p])))
def test_out_of_range_values(attempt, case):
    path, value = case
    assume(not (isinstance(value, int) and abs(value) >= 2**63))  # TOML integers are 64-bit
    assert path in attempt(_set(BASE, path, value))


@SETTINGS
@given(path=st.sampled_from(["model.name", "model.activation", "model.initializer", "model.normalization",
                             "optimizer.name", "schedule.name", "data.augment.flip", "data.standardize"]),
       name=UNKNOWN_NAME)
def test_unknown_component_names(attempt, path, name):
    err = attempt(_set(BASE, path, name))
    assert path in err and name in err


@SETTINGS
@given(data=st.data())
def test_malformed_toml(attempt, data):
    text = tomli_w.dumps(BASE)
    position = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(st.sampled_from('[]{}="\'.,#\n \\abc1'), min_size=1, max_size=6))
    broken = text[:position] + junk + text[position:]
    try:
        tomllib.loads(broken)
        assume(False)  # still valid TOML: not this test's case
    except tomllib.TOMLDecodeError:
        pass
    assert "is not valid TOML" in attempt(broken)


@SETTINGS
@given(value=TEXT)
def test_set_values_are_literals_never_code(cli, tmp_path, value):
    assume("\n" not in value and "\r" not in value)
    code, out, err = cli("show", "mlp-digits", "--set", f"model.depth={value}")
    if code == 0:  # only an integer literal is a valid depth
        assert int(tomllib.loads(f"v = {value}")["v"]) >= 1
    else:
        assert code == 2 and err.count("\n") == 1 and "model.depth" in err


def test_set_never_evaluates_python(cli, tmp_path):
    marker = tmp_path / "evaluated"
    code, _, err = cli("show", "mlp-digits", "--set", f"optimizer.lr=__import__('pathlib').Path('{marker}').touch()")
    assert code == 2 and "optimizer.lr must be a number" in err
    assert not marker.exists()
