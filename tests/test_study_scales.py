"""The explored interval scales (zoo/study_scales.py): each scale calibrated on the fitting data's groups, and the
rule fixed before the first run that picks one; hand cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_scales  # noqa: E402


def _held(consistency: float, count: int = 10) -> list[dict]:
    return [{"card": {"diagnostics.neighbours.patches.vote_consistency": consistency}} for _ in range(count)]


def test_each_scale_calibrated_on_the_groups_hand_case():
    """Group A: predicted gap 0.17, patch consistency 0.9, every error 0.1; group B: gap 0.07, consistency 0.5,
    errors 0.05. Normalized residuals: gap scale (0.03 + |gap|) A 0.1 / 0.2 = 0.5, B 0.05 / 0.1 = 0.5; doubt scale
    (0.03 + 1 - c) A 0.1 / 0.13, B 0.05 / 0.53. The 90% quantile is the 19th smallest of the 20: the largest value
    here (every residual of a group is the same). The gap scale covers both groups; the doubt scale covers A, and B
    because its residuals are below A's; the mean half-width is q times the mean scale."""
    cal = [(_held(0.9), np.full(10, 0.1), np.full(10, 0.17)), (_held(0.5), np.full(10, 0.05), np.full(10, 0.07))]
    table = study_scales.calibrated(cal)
    assert table["gap"]["quantile"] == pytest.approx(0.5)
    assert table["doubt"]["quantile"] == pytest.approx(0.1 / 0.13)
    assert table["gap+doubt"]["quantile"] == pytest.approx(0.1 / 0.3)  # A 0.1 / 0.3 > B 0.05 / 0.6
    assert table["gap"]["mean_half_width"] == pytest.approx(0.5 * (0.2 + 0.1) / 2)
    assert table["doubt"]["mean_half_width"] == pytest.approx(0.1 / 0.13 * (0.13 + 0.53) / 2)
    assert all(row["worst_group_coverage"] == 1.0 for row in table.values())


def test_the_doubt_scale_misses_a_biased_consistent_group():
    """A group whose patch vote is consistent (c = 1) but whose errors are large (0.2) and predicted so (gap 0.97),
    beside 19 groups of small errors (0.01, gap 0, c = 0.5). The 90% quantile is the 181st smallest of 200
    residuals: the small groups'. The doubt scale normalizes the large errors by 0.03 only (6.7 against 0.019): that
    group is not covered at all. The gap scale, which grows with the predicted gap, covers it (0.2 / 1.0 against
    the small groups' 0.01 / 0.03)."""
    small = [(_held(0.5), np.full(10, 0.01), np.zeros(10)) for _ in range(19)]
    biased = [(_held(1.0), np.full(10, 0.2), np.full(10, 0.97))]
    table = study_scales.calibrated(small + biased)
    assert table["doubt"]["quantile"] == pytest.approx(0.01 / 0.53)
    assert table["doubt"]["worst_group_coverage"] == 0.0
    assert table["gap"]["quantile"] == pytest.approx(0.01 / 0.03)
    assert table["gap"]["worst_group_coverage"] == 1.0


@pytest.mark.parametrize("coverages, widths, expected", [
    ((0.80, 0.79, 0.70), (0.20, 0.10, 0.05), "gap+doubt"),  # within 0.02 of the best and narrower
    ((0.90, 0.85, 0.95), (0.20, 0.10, 0.30), "doubt"),      # the best covered, the others too far below it
    ((0.80, 0.80, 0.80), (0.20, 0.10, 0.15), "gap+doubt"),  # all as good: the narrowest
])
def test_the_rule(coverages, widths, expected):
    table = {name: {"worst_group_coverage": c, "mean_half_width": w}
             for name, c, w in zip(study_scales.SCALES, coverages, widths)}
    assert study_scales.chosen(table) == expected
