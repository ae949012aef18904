"""The validity study's patch forms (zoo/study_estimate.py, evaluated by zoo/study_patches.py): every term they read
has its scorecard paths and description, Z forms read the patch space instead of the pixel vote, and the rule can be
run without them (estimator v4.2's candidates)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import pytest  # noqa: E402
import study_estimate  # noqa: E402


def _paths(term: str) -> list[str]:
    spec = study_estimate.PATHS[term]
    return [p for group in (spec if isinstance(spec, tuple) else (spec,)) for p in group]


def test_patch_forms_read_the_patch_space():
    forms = study_estimate.PATCH_FORMS
    assert sorted(f.split(":")[0] for f in forms) == ["K1", "K2", "M1", "M2", "XZ2", "Z1", "Z2", "Z3"]
    for form in forms:
        terms = study_estimate.FORMS[form]
        assert all(t in study_estimate.PATHS and t in study_estimate.DESCRIPTIONS for t in terms)
        paths = [p for t in terms for p in _paths(t)]
        assert any(study_estimate.PATCHES in p for p in paths)
        if form.startswith("Z"):  # the pixel vote is not read at all
            assert not any("neighbours.input" in p for p in paths)


def test_ceiling_forms_are_z1_plus_the_memorized_term():
    """v5.2's candidates: K1 and K2 read Z1's terms and what the model fits beyond the patch vote's ceiling, up to
    its label noise (CEILING_FORMS, evaluated without them by zoo/study_ceiling.py); the term is computed from the
    patch vote's values the scorecard holds."""
    z1 = study_estimate.FORMS["Z1: X1 in the patch space"]
    forms = {f.split(":")[0]: study_estimate.FORMS[f] for f in study_estimate.CEILING_FORMS}
    assert forms == {"K1": [*z1, "memorized_patches"],
                     "K2": [*z1, "memorized_patches", "memorized_patches_x_patch_reliability"]}
    assert _paths("memorized_patches") == [study_estimate.MEMORIZED]


def test_margin_forms_are_z1_plus_the_margin_quartiles():
    """v5.1's candidates: M1 and M2 read Z1's terms and the feature layer's log normalized margins, which the
    scorecard holds at diagnostics.margins (MARGIN_FORMS, evaluated without them by zoo/study_margins.py)."""
    z1 = study_estimate.FORMS["Z1: X1 in the patch space"]
    forms = {f.split(":")[0]: study_estimate.FORMS[f] for f in study_estimate.MARGIN_FORMS}
    assert forms == {"M1": [*z1, "margin_log_q2"], "M2": [*z1, "margin_log_q1", "margin_log_q2", "margin_log_q3"]}
    from genaudit.diagnostics.margins import DIAGNOSTIC

    assert DIAGNOSTIC.key == "margins"
    for term in ("margin_log_q1", "margin_log_q2", "margin_log_q3"):
        assert _paths(term) == [f"diagnostics.margins.{term[len('margin_'):]}"]


def test_the_rule_can_choose_among_a_subset_of_forms():
    """`choose` with `candidates` fits only those (v4.2's candidates: no patch form)."""
    records = []
    for run in range(12):
        for step in range(3):
            acc = 0.6 + 0.03 * run + 0.01 * step
            records.append({"zoo": "z", "run": run, "dataset": "d", "arch": "a", "holdout": acc - 0.05,
                            "card": {"clean_accuracy": acc}})
    candidates = ["T: training accuracy (gap 0)", "T-c: training accuracy minus a constant gap"]
    form, loss, cv = study_estimate.choose(records, candidates)
    assert {key[0] for key in cv} == set(candidates)
    assert form == "T-c: training accuracy minus a constant gap"  # a constant gap of 0.05 is fitted exactly
    assert cv[(form, loss)] < 1e-9


def test_a_form_without_intercept_fits_none(monkeypatch):
    """GENAUDIT_STUDY_INTERCEPT=both's variants: the gap is fitted through the origin."""
    form = "T-c: training accuracy minus a constant gap"
    monkeypatch.setitem(study_estimate.FORMS, "one term" + study_estimate.NO_INTERCEPT, ["train_acc"])
    records = [{"zoo": "z", "run": i, "dataset": "d", "arch": "a", "holdout": 0.5 * (0.6 + 0.01 * i),
                "card": {"clean_accuracy": 0.6 + 0.01 * i}} for i in range(20)]
    fitted = study_estimate.fit(records, "one term" + study_estimate.NO_INTERCEPT)
    assert fitted["intercept"] == 0.0 and fitted["coefficients"]["train_acc"] == pytest.approx(0.5)
    assert study_estimate.fit(records, form)["intercept"] == pytest.approx(0.5 * 0.695)  # the mean gap
