"""Tiny recipes for search tests: digits, a one-layer MLP, one or two epochs."""

import os
import subprocess
import sys

import pytest

TINY = """
name = "tiny"
seed = 0
epochs = {epochs}
[data]
dataset = "digits"
batch_size = 64
[model]
name = "mlp"
depth = 1
width = 16
[optimizer]
name = "adam"
lr = 0.003
[tune]
{tune}
"""

DEFAULT_TUNE = '''
"optimizer.lr" = { type = "float", min = 1e-3, max = 3e-2, sampling = "log" }
"model.width" = [8, 16, 32]
'''


@pytest.fixture
def tiny_recipe(tmp_path):
    """Writes a tiny recipe with a [tune] section; returns its path."""

    def write(tune=DEFAULT_TUNE, epochs=1, name="tiny.toml", extra=""):
        path = tmp_path / name
        path.write_text(TINY.format(tune=tune, epochs=epochs) + extra)
        return str(path)

    return write


def kzoo_process(*args, env=None, **kwargs):
    """Starts `python -m kzoo ARGS...` as a separate process (its own TensorFlow)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "kzoo", *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
