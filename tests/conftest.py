"""Shared test set-up: quiet TensorFlow, fixed seeds, a CLI runner."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_configure(config):
    """TensorFlow's thread pools as a digits run sizes them (`kzoo.cpu_threads`), before any test
    starts its runtime: in-process runs then compute as `kzoo run` of a small-step recipe does
    in its own process, whichever test runs first (thread counts change some kernels' sums)."""
    import kzoo
    from kzoo.cpu_threads import apply_threads

    apply_threads(kzoo.recipes.load("cnn-digits"))


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
