"""The registered gap-floor study's pieces (zoo/study_gap_floor.py), on synthetic records: the unreliability term
and the groups it reports on the never-fitted sets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

_environment = dict(os.environ)
import study_estimate  # noqa: E402
import study_gap_floor  # noqa: E402  (through study_fresh_estimate, it sets OMP/BLAS thread counts for its workers)

os.environ.clear()
os.environ.update(_environment)  # the other tests' processes see the environment the suite started with


def test_unreliability_is_one_minus_the_patch_vote_consistency():
    records = [{"card": {f"{study_estimate.PATCHES}.vote_consistency": 0.97}}, {"card": {}}]
    study_gap_floor.with_unreliability(records)
    assert study_estimate.read(records[0], "unreliability_patches") == pytest.approx(0.03)
    assert study_estimate.read(records[1], "unreliability_patches") is None  # no patch space: no term


def test_the_g_forms_have_no_intercept_and_g1_adds_the_floor():
    g0, g1 = study_gap_floor.NEW
    assert g0.endswith(study_estimate.NO_INTERCEPT) and g1.endswith(study_estimate.NO_INTERCEPT)
    assert study_gap_floor.NEW[g1] == [*study_gap_floor.NEW[g0], "unreliability_patches"]


def test_groups_keep_those_of_ten_models_or_more():
    """12 MNIST models, 10 of them clean; 9 Fashion-MNIST models, all clean: the Fashion-MNIST groups are too
    small to be read."""
    records = ([{"dataset": "mnist", "corruption": 0}] * 10 + [{"dataset": "mnist", "corruption": 20}] * 2
               + [{"dataset": "fashion-mnist", "corruption": 0}] * 9)
    found = study_gap_floor.groups(records)
    assert set(found) == {"all", "mnist", "mnist, clean labels"}
    assert len(found["mnist, clean labels"]) == 10 and len(found["all"]) == 21


def test_criterion_4_names_the_groups_that_err_more_or_cover_less():
    """Published 0.020 / 0.95: 0.026 errs more than 0.005 above it, 0.024 does not; coverage 0.80 is below 0.85 and
    below the published 0.95, but 0.60 against a published 0.60 is no drop."""
    def group(published, new):
        return {"published": {"mae": published[0], "coverage_90": published[1]},
                "new": {"mae": new[0], "coverage_90": new[1]}}
    sets = {"A": {"all": group((0.020, 0.95), (0.026, 0.95)), "x": group((0.020, 0.95), (0.024, 0.95))},
            "B": {"all": group((0.020, 0.95), (0.020, 0.80)), "y": group((0.020, 0.60), (0.020, 0.60))}}
    found = study_gap_floor.criterion_4_misses(sets)
    assert [line.split(":")[0] for line in found] == ["A / all", "B / all"]


def test_clean_mnist_groups_are_read_where_there_are_any():
    """Set A's clean MNIST group errs 0.015 against training accuracy's 0.007 (above it), B's 0.010 against 0.012;
    C has no such group and is not counted."""
    def group(new, train):
        return {"new": {"mae": new}, "train_acc": {"mae": train}}
    sets = {"A": {"mnist, clean labels": group(0.015, 0.007)}, "B": {"mnist, clean labels": group(0.010, 0.012)},
            "C": {"all": group(0.5, 0.1)}}
    assert study_gap_floor.clean_mnist_above_training(sets) == (["A", "B"], ["A"])
