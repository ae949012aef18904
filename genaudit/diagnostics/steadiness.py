"""Neuron steadiness (Mao et al., Neuron Steadiness Regularization): how much a unit's response varies within a class.

V_n = sum_c alpha_c Var(F_n | c), alpha_c = fraction of samples in class c (population variances). Mao et al.
observe that correctly classified samples have smaller intra-class variance and that smaller variance goes with
better generalization, while cross-entropy training lets it grow: lower = steadier = generalizes better.
V_n is in squared activation units, so only the ratio to the total variance compares across models.
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics._classes import Classes
from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric


def intra_class_variance(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-unit sum_c alpha_c Var(values[:, n] | c) of `values` (N x D): the mean squared distance of each sample
    to its own class mean. By the law of total variance it is at most the unit's total variance."""
    values = np.asarray(values, np.float64)
    groups = Classes.of(classes)
    return groups.squared_residuals(values, groups.means(values)).mean(axis=0)


def steadiness(fs: FeatureSet) -> dict:
    """Intra-class variance of the layer's units (classes: reference labels; conv: spatial means per channel).

    value: mean over units of V_n (scale-dependent: compare models of one architecture); sum: sum over units;
    ratio: sum V_n / sum total variance, in [0, 1], scale-free: 0 = every unit constant within each class,
    1 = class explains none of the variance; lower = steadier = generalizes better (None if no unit varies).
    """
    values = fs.unit_values().astype(np.float64)
    within = intra_class_variance(values, fs.reference)
    total = values.var(axis=0).sum()
    return {
        "value": float(within.mean()),
        "sum": float(within.sum()),
        "ratio": float(within.sum() / total) if total > 0 else None,
        "per_unit": within.tolist(),
    }


DIAGNOSTIC = Diagnostic(
    "steadiness", "layer", lambda c: steadiness(c.fs),
    (Metric(name="steadiness", path="steadiness.ratio", label="intra-class variance ratio", group="class structure",
            better=Better.LOWER, short="within-class share of variance",
            meaning="share of the units' variance that is within-class (Σ intra-class var / Σ total var)",
            formula="Σ_n Σ_c α_c Var(F_n | c) / Σ_n Var(F_n)",
            source="Mao et al., Neuron Steadiness Regularization",
            reading="Lower = units respond steadily within a class; NSR lowers it and improves generalization.",
            column="intra_class_variance_ratio", tag="intra/total", headline=True),
     Metric(name="steadiness_sum", path="steadiness.sum", label="Σ intra-class variance", group="class structure",
            better=Better.DESCRIPTIVE, short="within-class variance, Σ units",
            meaning="aggregated intra-class variance of the layer (Σ over units; scale-dependent)",
            formula="Σ_n Σ_c α_c Var(F_n | c)", source="Mao et al., Neuron Steadiness Regularization",
            reading="Scale-dependent: compare layers of one model. The layer where it is largest is where NSR would "
                    "help most (the per-layer table names it).", column="intra_class_variance_sum",
            tag="Σ intra var")),
)
