"""Shared test set-up: quiet TensorFlow, fixed seeds, a CLI runner."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def cli(capsys):
    """Runs `kzoo ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from kzoo.cli import main

    def invoke(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke
