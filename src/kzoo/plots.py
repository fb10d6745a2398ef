"""Plots a person would rather look at than a table. Matplotlib's Agg backend, PNG files."""

from __future__ import annotations

import os


def _pyplot():
    # Imported here, not at the top: switching to Agg when kzoo is imported would take a
    # notebook's interactive backend away; kzoo switches only when it draws.
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str):
    """Saves atomically (temporary file, then rename) and closes the figure."""
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    _pyplot().close(fig)


def plot_curves(rows: list[dict], path: str, title: str = "", boundaries=()):
    """Train vs validation loss and accuracy, and the learning rate, per epoch.

    Args:
        rows: one dict per epoch (`epoch`, `loss`, `val_loss`, `accuracy`, ...).
        boundaries: epochs after which a new stage starts (drawn as dashed lines).
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("loss", "Loss", False), ("accuracy", "Accuracy", False), ("learning_rate", "Learning rate", True)]
    for ax, (key, label, log) in zip(axes, panels):
        for prefix, style, name in (("", "-o", "train"), ("val_", "-s", "validation")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values) and not (prefix and key == "learning_rate"):
                ax.plot(epochs, values, style, markersize=3, label=name if key != "learning_rate" else None)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        if log and all((r.get(key) or 0) > 0 for r in rows):
            ax.set_yscale("log")
        if key != "learning_rate":
            ax.legend()
        for b in boundaries:
            ax.axvline(b + 0.5, color="gray", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
