"""The validity study's interval calibration (zoo/study_estimate.py), which makes the published estimator's
interval: each (zoo, data set) predicted by a fit on the others, on synthetic records with a hand-computed result."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_estimate  # noqa: E402

CONSTANT_GAP = "T-c: training accuracy minus a constant gap"


def _records(zoo: str, gap: float, runs: int = 10, consistency: float = 0.9) -> list[dict]:
    return [{"zoo": zoo, "dataset": "mnist", "run": f"{zoo}{k}", "holdout": 0.9 - gap,
             "card": {"clean_accuracy": 0.9, "diagnostics.neighbours.input.vote_consistency": consistency}}
            for k in range(runs)]


def test_group_out_calibration_hand_case(monkeypatch):
    """Two zoos whose gaps are 0.1 and 0.3. A constant gap fitted on one predicts the other: errors 0.2, normalized
    by 0.03 + the predicted gap, 0.2 / 0.33 for the first zoo and 0.2 / 0.13 for the second; the 90% conformal
    quantile of those 20 residuals (rank 19) is 0.2 / 0.13. The published fit uses both zoos, each weighing the
    same: a gap of 0.2."""
    monkeypatch.setattr(study_estimate, "CALIBRATION", "group-out")
    records = _records("noise", 0.1) + _records("sweep", 0.3)
    model = study_estimate.calibrate(records, CONSTANT_GAP)
    assert model["intercept"] == pytest.approx(0.2)
    assert model["conformal"]["quantile_90"] == pytest.approx(0.2 / 0.13)
    assert model["conformal"]["calibration_models"] == model["conformal"]["fit_models"] == 20
    assert model["conformal"]["abs_unreliable"] is None  # no model with an unreliable pixel reference


def test_group_out_floor_comes_from_the_unreliable_models_errors(monkeypatch):
    """The unreliable-reference floor is the 90% quantile of such models' absolute errors (at least 20 of them)."""
    monkeypatch.setattr(study_estimate, "CALIBRATION", "group-out")
    records = _records("noise", 0.1, runs=20, consistency=0.3) + _records("sweep", 0.3, runs=20)
    model = study_estimate.calibrate(records, CONSTANT_GAP)
    assert model["conformal"]["unreliable_models"] == 20
    assert model["conformal"]["abs_unreliable"] == pytest.approx(0.2)


def test_split_calibration_is_v4s(monkeypatch):
    """"split": fit on 70% of the runs, the quantile from the other 30% (estimator v4)."""
    monkeypatch.setattr(study_estimate, "CALIBRATION", "split")
    records = _records("noise", 0.1) + _records("sweep", 0.3)
    model = study_estimate.calibrate(records, CONSTANT_GAP)
    assert model["conformal"]["calibration_models"] == 6 and model["conformal"]["fit_models"] == 14
