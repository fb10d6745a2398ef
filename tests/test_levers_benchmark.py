"""The levers benchmark's published rule and its photo folder, without training anything:
the verdicts the docs print follow the stated rule, and the folder is the same every time."""

import hashlib
import os

import pytest

from benchmarks import levers
from benchmarks.photos import CLASSES, make_photo_folder


def _row(dataset, config, seed, accuracy, ece):
    return {"dataset": dataset, "config": config, "seed": seed, "test_accuracy": accuracy, "ece": ece}


@pytest.mark.parametrize("diff, sd, sd_base, higher, expected", [
    (0.03, 0.01, 0.02, True, "helps"),
    (-0.03, 0.01, 0.02, True, "hurts"),
    (0.015, 0.01, 0.02, True, "no help"),   # within the larger spread (the baseline's)
    (-0.02, 0.02, 0.01, True, "no help"),   # exactly the larger spread: still noise
    (-0.03, 0.01, 0.01, False, "helps"),    # a lower ECE is better
    (0.03, None, None, True, "one seed"),
])
def test_verdict_compares_the_difference_with_the_larger_seed_spread(diff, sd, sd_base, higher, expected):
    assert levers.verdict(diff, sd, sd_base, higher_is_better=higher) == expected


def test_summary_reports_mean_sample_sd_and_verdicts_against_the_baseline():
    rows = [_row("d", "baseline", s, a, e) for s, a, e in ((0, 0.80, 0.10), (1, 0.82, 0.12), (2, 0.84, 0.11))]
    rows += [_row("d", "label smoothing 0.1", s, a, e) for s, a, e in ((0, 0.90, 0.05), (1, 0.91, 0.06), (2, 0.92, 0.04))]
    rows += [_row("d", "MixUp 0.2", s, a, e) for s, a, e in ((0, 0.80, 0.12), (1, 0.83, 0.10), (2, 0.83, 0.11))]
    table = {e["config"]: e for e in levers.summarize(rows, ["baseline", "label smoothing 0.1", "MixUp 0.2"], ["d"])["d"]}
    assert table["baseline"]["accuracy_mean"] == pytest.approx(0.82)
    assert table["baseline"]["accuracy_sd"] == pytest.approx(0.02)  # sample sd (n - 1)
    assert "accuracy_verdict" not in table["baseline"]
    smoothing = table["label smoothing 0.1"]
    assert smoothing["accuracy_diff"] == pytest.approx(0.09)
    assert (smoothing["accuracy_verdict"], smoothing["ece_verdict"]) == ("helps", "helps")
    assert smoothing["settings"] == "loss.label_smoothing=0.1"
    assert (table["MixUp 0.2"]["accuracy_verdict"], table["MixUp 0.2"]["ece_verdict"]) == ("no help", "no help")


def test_photo_folder_is_deterministic_with_four_classes(tmp_path):
    def digest(root):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))
        return [(os.path.relpath(f, root), hashlib.sha256(open(f, "rb").read()).hexdigest()) for f in files]

    a = make_photo_folder(str(tmp_path / "a"), train_per_class=2, test_per_class=3, size=16)
    b = make_photo_folder(str(tmp_path / "b"), train_per_class=2, test_per_class=3, size=16)
    assert digest(a) == digest(b)
    assert sorted(os.listdir(tmp_path / "a" / "train")) == sorted(CLASSES)
    assert len(digest(a)) == 4 * (2 + 3)
    # Other settings rewrite the folder instead of reusing the stale one.
    make_photo_folder(str(tmp_path / "a"), train_per_class=1, test_per_class=1, size=16)
    assert len(digest(a)) == 4 * 2
