"""The versions of kzoo and the libraries it trains with, recorded in every run's metrics."""

from __future__ import annotations

PACKAGES = ("kzoo", "keras", "tensorflow", "tensorflow-cpu", "keras-tuner", "tensorflow-datasets", "numpy")


def package_versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
