"""The validity study's interval calibration (zoo/study_estimate.py), which makes the published estimator's
interval: each (zoo, data set) predicted by a fit on the others; and its fit, by least squares or least absolute
deviations, the loss chosen like the form; on synthetic records with hand-computed results."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_estimate  # noqa: E402

CONSTANT_GAP = "T-c: training accuracy minus a constant gap"


def _records(zoo: str, gap: float, runs: int = 10, consistency: float = 0.9) -> list[dict]:
    return [{"zoo": zoo, "dataset": "mnist", "run": f"{zoo}{k}", "holdout": 0.9 - gap, "corruption": 0, "arch": "mlp",
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


@pytest.mark.parametrize("calibration, expected", [("worst-group", 1.0), ("shifted", 1.1)])
def test_the_explored_group_calibrations_hand_case(monkeypatch, calibration, expected):
    """Two calibration groups of 9 signed normalized residuals: [0.1 x 8, 1.0] and [-0.3 x 9]. worst-group: each
    group's 90% quantile of |r| (rank ceil(10 * 0.9) = 9 of 9: its largest) is 1.0 and 0.3, the larger 1.0.
    shifted: the group means are 0.2 and -0.3; about them the residuals are [-0.1 x 8, 0.8] and [0 x 9], whose 90%
    quantile (rank ceil(19 * 0.9) = 18 of 18) is 0.8; plus the largest |mean| 0.3: 1.1."""
    monkeypatch.setattr(study_estimate, "CALIBRATION", calibration)
    groups = [np.array([0.1] * 8 + [1.0]), np.array([-0.3] * 9)]
    assert study_estimate.group_quantile(groups) == pytest.approx(expected)
    records = _records("noise", 0.1) + _records("sweep", 0.3)  # the hand case above: one residual per group
    assert study_estimate.calibrate(records, CONSTANT_GAP)["conformal"]["quantile_90"] == pytest.approx(0.2 / 0.13)


def test_split_calibration_is_v4s(monkeypatch):
    """"split": fit on 70% of the runs, the quantile from the other 30% (estimator v4)."""
    monkeypatch.setattr(study_estimate, "CALIBRATION", "split")
    records = _records("noise", 0.1) + _records("sweep", 0.3)
    model = study_estimate.calibrate(records, CONSTANT_GAP)
    assert model["conformal"]["calibration_models"] == 6 and model["conformal"]["fit_models"] == 14


def test_least_absolute_deviations_hand_case():
    """On four points of y = 2x and one far off the line, least absolute deviations returns the line itself
    (intercept 0, slope 2: zero error on four of five points); least squares is pulled towards the fifth."""
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([0.0, 2.0, 4.0, 6.0, 20.0])
    a = np.column_stack([np.ones(5), x])
    w = np.ones(5)
    assert study_estimate.solve(a, y, w, study_estimate.ABSOLUTE) == pytest.approx([0.0, 2.0], abs=1e-9)
    # least squares' slope: sum(dx dy) / sum(dx^2) = 44 / 10
    assert study_estimate.solve(a, y, w, study_estimate.SQUARES)[1] == pytest.approx(4.4)


def test_least_absolute_deviations_weighs_each_group_the_same():
    """A constant gap fitted on three zoos of different sizes (gaps 0.1, 0.1, 0.5): each zoo weighs the same, so
    least absolute deviations gives their weighted median, 0.1, and least squares their mean, 0.7 / 3."""
    records = _records("noise", 0.1, runs=30) + _records("sweep", 0.1, runs=5) + _records("realuse", 0.5, runs=10)
    assert study_estimate.fit(records, CONSTANT_GAP, study_estimate.ABSOLUTE)["intercept"] == pytest.approx(0.1)
    assert study_estimate.fit(records, CONSTANT_GAP, study_estimate.SQUARES)["intercept"] == pytest.approx(0.7 / 3)


def test_the_rule_chooses_the_loss_by_cross_validation(monkeypatch):
    """Gaps of 0.1 in 20 runs and 0.9 in 4: a constant gap by least absolute deviations (the median, 0.1) errs by
    0.8 on a sixth of the runs; by least squares (the mean) or none at all it errs on all of them, so the rule picks
    the constant gap fitted by least absolute deviations, and says so."""
    monkeypatch.setattr(study_estimate, "FORMS", {study_estimate.BASELINE: None, CONSTANT_GAP: []})
    records = _records("noise", 0.1, runs=20) + [{**r, "run": f"far{k}"} for k, r in
                                                  enumerate(_records("noise", 0.9, runs=4))]
    form, loss, cv = study_estimate.choose(records)
    assert (form, loss) == (CONSTANT_GAP, study_estimate.ABSOLUTE)
    assert cv[(CONSTANT_GAP, study_estimate.ABSOLUTE)] == pytest.approx(0.8 * 4 / 24)
    assert (study_estimate.BASELINE, study_estimate.ABSOLUTE) not in cv  # training accuracy alone fits nothing


@pytest.mark.parametrize("accuracy, reference, consistency, expected", [
    (1.0, 0.7, 0.9, 0.2),    # memorized 30% beyond the ceiling; the vote calls 20% of the labels noise: capped at 0.2
    (0.8, 0.7, 0.9, 0.1),    # fits 10% beyond the ceiling, under the noise share
    (0.99, 0.96, 0.95, 0.0),  # clean data: the halves agree less than the labels do, so no label noise to fit
    (0.6, 0.7, 0.9, 0.0),    # below the ceiling
])
def test_the_ceiling_term_hand_cases(accuracy, reference, consistency, expected):
    """memorized_patches (estimator v5.2's ceiling forms): what the model fits beyond the labels' agreement with the
    patch vote, up to the vote's label noise (consistency - the labels' agreement)."""
    base = study_estimate.PATCHES
    card = {"clean_accuracy": accuracy, f"{base}.reference_agreement": reference,
            f"{base}.vote_consistency": consistency}
    assert study_estimate.memorized(card) == pytest.approx(expected)
    assert study_estimate.memorized({"clean_accuracy": accuracy}) is None
    (record,) = study_estimate.with_memorized([{"card": dict(card)}])
    assert study_estimate.read(record, "memorized_patches") == pytest.approx(expected)
    assert study_estimate.read(record, "memorized_patches_x_patch_reliability") == pytest.approx(expected * consistency)


def test_no_worse_than_training_reads_every_group_of_twenty():
    """Training accuracy errs 0.05 on the sweep's 20 models and 0.3 on the noise zoo's 20 (also the group "noise
    zoo (0-40% wrong labels)"). CV errors of 0.04 and 0.1 are no worse anywhere; 0.06 on the sweep is worse there;
    a group of 19 models (the real-use zoo's MNIST runs here, where any error is worse) is not read."""
    records = _records("sweep", 0.05, runs=20) + _records("noise", 0.3, runs=20)
    index = np.arange(40)
    assert study_estimate.no_worse_than_training(records, index, np.array([0.04] * 20 + [0.1] * 20))
    assert not study_estimate.no_worse_than_training(records, index, np.array([0.06] * 20 + [0.1] * 20))
    assert not study_estimate.no_worse_than_training(records, index, np.array([0.04] * 20 + [0.31] * 20))
    few = records + _records("realuse", 0.0, runs=19)
    assert study_estimate.no_worse_than_training(few, np.arange(59), np.array([0.04] * 20 + [0.1] * 20 + [0.5] * 19))


def test_the_safe_rule_skips_forms_worse_than_training_accuracy(monkeypatch):
    """Hand-set CV errors (sweep's 20 models, then the noise zoo's 20; training accuracy errs 0.05 and 0.3 there):
    a constant gap errs 0.06 / 0.01 (CV MAE 0.035, the best and the sparsest, but worse than training accuracy on
    the sweep), a one-term form 0.04 / 0.035 (0.0375). The pooled rule takes the constant gap, the safe rule the
    one-term form; were that form also worse somewhere, the safe rule would fall back to the pooled choice."""
    one_term = "C: pixel consistency"
    monkeypatch.setattr(study_estimate, "FORMS", {study_estimate.BASELINE: None, CONSTANT_GAP: [],
                                                  one_term: ["consistency_input"]})
    records = _records("sweep", 0.05, runs=20) + _records("noise", 0.3, runs=20)
    errors = {study_estimate.BASELINE: [0.05, 0.3], CONSTANT_GAP: [0.06, 0.01], one_term: [0.04, 0.035]}

    def fake(records, form, loss):
        return np.arange(40), np.repeat(errors[form], 20)

    monkeypatch.setattr(study_estimate, "cv_errors", fake)
    assert study_estimate.choose(records)[:2] == (CONSTANT_GAP, study_estimate.SQUARES)
    assert study_estimate.choose(records, safe=True)[:2] == (one_term, study_estimate.SQUARES)
    errors[one_term] = [0.07, 0.0]
    assert study_estimate.choose(records, safe=True)[:2] == study_estimate.choose(records)[:2]


def test_the_balanced_rule_weighs_each_group_as_the_fit_does(monkeypatch):
    """Hand-set CV errors on the noise zoo's 30 models and the sweep's 10: a constant gap errs 0.01 / 0.09, a
    one-term form 0.04 / 0.02. Pooled, their CV MAEs are 0.03 and 0.035, so the rule takes the constant gap (the
    sparser too); balanced, each zoo weighs a half: 0.05 against 0.03, and the rule takes the one-term form."""
    one_term = "C: pixel consistency"
    monkeypatch.setattr(study_estimate, "FORMS", {study_estimate.BASELINE: None, CONSTANT_GAP: [],
                                                  one_term: ["consistency_input"]})
    records = _records("noise", 0.3, runs=30) + _records("sweep", 0.05, runs=10)
    errors = {study_estimate.BASELINE: [0.3, 0.05], CONSTANT_GAP: [0.01, 0.09], one_term: [0.04, 0.02]}

    def fake(records, form, loss):
        return np.arange(40), np.repeat(errors[form], [30, 10])

    monkeypatch.setattr(study_estimate, "cv_errors", fake)
    form, loss, cv = study_estimate.choose(records)
    assert (form, loss) == (CONSTANT_GAP, study_estimate.SQUARES)
    assert cv[(CONSTANT_GAP, study_estimate.SQUARES)] == pytest.approx(0.03)
    form, loss, cv = study_estimate.choose(records, balanced=True)
    assert (form, loss) == (one_term, study_estimate.SQUARES)
    assert cv[(CONSTANT_GAP, study_estimate.SQUARES)] == pytest.approx(0.05)
    assert cv[(one_term, study_estimate.SQUARES)] == pytest.approx(0.03)


def test_image_candidates_read_the_patch_space_and_the_fallbacks_do_not():
    """Rule P: the image estimator is chosen among the forms that read the patch space (every one has a term from
    it), the fallback among the others (none has); training accuracy alone is a fallback candidate."""
    patch_terms = [name for name, spec in study_estimate.PATHS.items() if study_estimate.PATCHES in str(spec)]
    for form in study_estimate.IMAGE_CANDIDATES:
        assert any(term in patch_terms for term in study_estimate.FORMS[form]), form
    for form in set(study_estimate.FORMS) - set(study_estimate.IMAGE_CANDIDATES):
        assert not any(term in patch_terms for term in study_estimate.FORMS[form] or []), form
    assert study_estimate.BASELINE not in study_estimate.IMAGE_CANDIDATES
