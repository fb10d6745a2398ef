"""Imports TensorFlow without its C++ start-up chatter.

TensorFlow 2.21 logs "oneDNN custom operations are on" and the CPU-feature notice through absl
before absl is initialized, so `TF_CPP_MIN_LOG_LEVEL` cannot silence them: every `kzoo` call
printed four lines of noise to stderr. `import_tensorflow` catches file descriptor 2 while
TensorFlow loads and passes on every line except those notices, so real errors and warnings
still reach the user.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

# The notices dropped; anything else written during the import is passed on.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|^I\d{4} .*\] (oneDNN custom operations are on|This TensorFlow binary is optimized)"
    r"|^To enable the following instructions:"
)


def import_tensorflow():
    """Imports TensorFlow, dropping its start-up notices unless `TF_CPP_MIN_LOG_LEVEL` is 0.

    Returns:
        The `tensorflow` module.
    """
    return quiet_import("tensorflow", quiet=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0")


def quiet_import(name: str, quiet: bool = True):
    """Imports module `name`; with `quiet`, what it writes to fd 2 is passed on without `NOISE`.

    Args:
        name: the module to import.
        quiet: filter the import's stderr. Defaults to `True`.

    Returns:
        The module.
    """
    if name in sys.modules or not quiet:
        return importlib.import_module(name)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            return importlib.import_module(name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NOISE.search(line)))
            sys.stderr.flush()
