"""Calibration of predicted probabilities: expected calibration error and reliability bins.

A classifier is calibrated when, among the examples it predicts with confidence p, a
fraction p is right. Modern networks tend to be over-confident (Guo et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ReliabilityBins:
    """Predictions grouped by confidence into equal-width bins over [0, 1].

    Attributes:
        edges: the `bins + 1` bin edges.
        confidence: mean confidence of the predictions in each bin (NaN where empty).
        accuracy: fraction correct in each bin (NaN where empty).
        count: number of predictions in each bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence|."""
        total = self.count.sum()
        if total == 0:
            return 0.0
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((gaps * self.count[filled]).sum() / total)


def _check(probs, labels, bins):
    probs = np.asarray(probs, dtype="float64")
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (examples, classes). Received: probs.shape={probs.shape}")
    if len(probs) != len(labels):
        raise ValueError(f"probs and labels differ in length. Received: {len(probs)} and {len(labels)}")
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1. Received: bins={bins}")
    return probs, labels.astype("int64"), int(bins)


def reliability_bins(probs, labels, bins: int = 15) -> ReliabilityBins:
    """Groups top-1 predictions by confidence for a reliability diagram.

    Args:
        probs: predicted probabilities, shape `(examples, classes)`.
        labels: integer labels, shape `(examples,)`.
        bins: number of equal-width confidence bins. Defaults to `15`.

    Example:
        >>> r = reliability_bins(model.predict(x), y)
        >>> r.ece
    """
    probs, labels, bins = _check(probs, labels, bins)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype("float64")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lo, hi]; a confidence of exactly 0 goes into the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        mean_acc = np.bincount(index, weights=correct, minlength=bins) / count
    return ReliabilityBins(edges=edges, confidence=mean_conf, accuracy=mean_acc, count=count)


def expected_calibration_error(probs, labels, bins: int = 15) -> float:
    """Expected calibration error (ECE) of the top-1 predictions.

    `ECE = sum_b (n_b / n) * |accuracy(b) - confidence(b)|` over equal-width confidence bins.

    Args:
        probs: predicted probabilities, shape `(examples, classes)`.
        labels: integer labels, shape `(examples,)`.
        bins: number of equal-width confidence bins. Defaults to `15`.

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
        https://arxiv.org/abs/1706.04599
    """
    return reliability_bins(probs, labels, bins).ece
