"""The benchmark harness: a row measured in alternating rounds reports the median of its
round-by-round ratios, which a machine that speeds up or slows down between rounds does not move."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

from benchmarks.harness import Result, alternate, paired_median  # noqa: E402


def test_paired_ratio_follows_each_round_not_the_medians_of_each_side():
    # The machine runs at full speed, at half, then at full again; "on" costs 4% in every round.
    speed = iter([1.0, 1.0, 0.5, 0.5, 1.0, 1.0])
    values = alternate({"on": lambda: 96.0 * next(speed), "off": lambda: 100.0 * next(speed)}, 3)
    assert values == {"on": [96.0, 48.0, 96.0], "off": [100.0, 50.0, 100.0]}
    assert paired_median(values["on"], values["off"]) == pytest.approx(0.96)

    # Drift that lands on different sides in different rounds: the medians' quotient says 1.0.
    on, off = [10.0, 20.0, 30.0], [20.0, 10.0, 60.0]
    row = Result("monitors", "samples/s", 20.0, 20.0, "samples/s", goal=0.95, paired_ratio=paired_median(on, off))
    assert row.kzoo / row.baseline == 1.0
    assert row.ratio == 0.5 and row.meets_goal is False
    assert row.to_dict()["ratio"] == 0.5


def test_paired_median_refuses_rounds_that_do_not_pair():
    with pytest.raises(ValueError, match="Received: 2 and 3"):
        paired_median([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        paired_median([], [])
