"""Evaluation plots: confusion matrix, most confidently wrong examples, reliability diagram."""

from __future__ import annotations

import numpy as np

from kzoo.plots import _pyplot, save_figure


def plot_confusion(matrix, class_names, path: str, title: str = ""):
    """A confusion matrix, coloured by the fraction of each true class (rows sum to 1),
    annotated with the counts.

    Args:
        matrix: counts, rows = true class, columns = predicted class.
        class_names: one name per class.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = len(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    fraction = matrix / np.maximum(rows, 1)
    size = min(max(3.5, 0.38 * n + 1.5), 14)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if fraction[i, j] > 0.5 else "black")
        names = [str(c) for c in class_names]
        ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right")
        ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    save_figure(fig, path)


def most_confident_errors(probs, labels, k: int = 16) -> np.ndarray:
    """Indices of up to `k` misclassified examples, the most confident first."""
    probs = np.asarray(probs)
    labels = np.asarray(labels).reshape(-1)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-probs[wrong, predicted[wrong]], kind="stable")
    return wrong[order[:k]]


def plot_errors(images, labels, probs, class_names, path: str, k: int = 16, title: str = ""):
    """A grid of the most confidently wrong examples, each titled `true -> predicted (p)`.

    Args:
        images: the raw inputs, shape `(examples, H, W, C)` with C = 1 or 3.
        labels: integer labels.
        probs: predicted probabilities.
    Returns:
        The number of examples shown (0 when nothing was wrong; the figure says so).
    """
    plt = _pyplot()
    idx = most_confident_errors(probs, labels, k)
    cols = min(max(len(idx), 1), 8)
    rows = max(1, int(np.ceil(len(idx) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 0.4, 1.75 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    names = [str(c) for c in class_names]
    for ax, i in zip(axes.ravel(), idx):
        image = np.asarray(images[i], dtype="float64")
        lo, hi = image.min(), image.max()
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray_r" if _dark_background(image) else "gray")
        else:
            ax.imshow(image[..., :3])
        pred = int(np.argmax(probs[i]))
        ax.set_title(f"{names[int(labels[i])]} \u2192 {names[pred]} ({probs[i][pred]:.2f})", fontsize=8,
                     color="#b00020")
    if not len(idx):
        axes[0, 0].text(0.5, 0.5, "no errors", ha="center", va="center", fontsize=12)
    fig.suptitle(title or "Most confidently wrong (true \u2192 predicted, confidence)", fontsize=10)
    save_figure(fig, path)
    return len(idx)


def _dark_background(image) -> bool:
    # Digits are bright strokes on black; drawn inverted they read like ink on paper.
    return float(np.median(image)) < 0.5


def plot_reliability(bins, path: str, title: str = ""):
    """A reliability diagram: accuracy against confidence per bin, with the gap to the diagonal
    shaded and the share of predictions per bin underneath.

    Args:
        bins: a `kzoo.calibration.ReliabilityBins`.
    """
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    edges = bins.edges
    width = edges[1:] - edges[:-1]
    centers = (edges[1:] + edges[:-1]) / 2
    filled = bins.count > 0
    ax.bar(centers[filled], bins.accuracy[filled], width=width[filled], edgecolor="#1f4e79",
           color="#4a90d9", label="accuracy")
    gap_lo = np.minimum(bins.accuracy, bins.confidence)[filled]
    gap_hi = np.maximum(bins.accuracy, bins.confidence)[filled]
    ax.bar(centers[filled], gap_hi - gap_lo, bottom=gap_lo, width=width[filled], facecolor="none",
           edgecolor="#b00020", hatch="///", linewidth=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"Reliability (ECE {bins.ece:.4f})")
    share = bins.count / max(bins.count.sum(), 1)
    hist.bar(centers, share, width=width, color="#888888")
    hist.set_xlabel("confidence")
    hist.set_ylabel("share")
    hist.set_yscale("log" if share[filled].min(initial=1) < 0.01 else "linear")
    save_figure(fig, path)
