"""The residual exploration's pieces (zoo/explore_residuals.py), on hand-made values."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import explore_residuals  # noqa: E402


def test_agreement_counts_strong_groups_with_and_against_the_median_sign():
    """The five whole groups' median ρ is +0.1 (positive): +0.35 and +0.6 count with it, -0.5 against, +0.1 and
    -0.2 are too weak to count either way; the subgroups are not read."""
    rho = dict(zip(explore_residuals.WHOLE, (0.1, -0.5, 0.35, 0.6, -0.2)))
    rho.update({"realuse mnist (full data, clean labels)": -0.9})
    assert explore_residuals.agreement(rho) == (2, 1)


def test_agreement_without_any_value_counts_nothing():
    assert explore_residuals.agreement(dict.fromkeys(explore_residuals.WHOLE)) == (0, 0)


def test_values_keep_finite_scalars_and_drop_the_fits_own_inputs_and_counts():
    record = {"card": {"clean_accuracy": 0.9, "diagnostics.ablation.auc": 0.7, "estimate.accuracy": 0.8,
                       "diagnostics.neighbours.input.samples": 2000, "diagnostics.noise.auc": float("nan"),
                       "layers.feature": "x", "flag": True},
              "new": {"margins": {"log_q2": -2.0, "samples": 2000}, "nb_feat": 0.5}}
    assert explore_residuals.values(record) == {"diagnostics.ablation.auc": 0.7, "new.margins.log_q2": -2.0,
                                                "new.nb_feat": 0.5}
