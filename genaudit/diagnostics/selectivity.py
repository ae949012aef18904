"""Class selectivity index (Morcos et al. 2018): how much a unit prefers one class over the rest.

SI_j = (mu_max - mu_-max) / (mu_max + mu_-max) over class-conditional mean activations: 0 = responds equally
to every class, 1 = responds to one class only. Morcos found highly selective units no more important than
others; a layer of highly selective units is typical of a network that memorizes less distributed codes.
"""

from __future__ import annotations

import numpy as np

from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric


def selectivity_index(values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per-unit selectivity of `values` (N x D) given class ids; returns (SI per unit, whether it shifted).

    Units with negative values are shifted to be non-negative (minus their minimum) first; dead units
    (all class means zero) get SI 0.
    """
    shifted = bool((values < 0).any())
    if shifted:
        values = values - values.min(axis=0, keepdims=True)
    labels = np.unique(classes)
    means = np.stack([values[classes == c].mean(axis=0) for c in labels])   # C x D
    if len(labels) < 2:
        return np.zeros(values.shape[1]), shifted
    top = means.argmax(axis=0)
    mu_max = means[top, np.arange(means.shape[1])]
    mu_rest = (means.sum(axis=0) - mu_max) / (len(labels) - 1)
    denom = mu_max + mu_rest
    si = np.divide(mu_max - mu_rest, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    return si, shifted


def selectivity(fs: FeatureSet, bins: int = 10) -> dict:
    """Distribution of class selectivity over the layer's units (classes: reference labels)."""
    si, shifted = selectivity_index(fs.unit_values().astype(np.float64), fs.reference)
    hist, edges = np.histogram(si, bins=bins, range=(0.0, 1.0))
    return {
        "mean": float(si.mean()),
        "median": float(np.median(si)),
        "std": float(si.std()),
        "max": float(si.max()),
        "histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
        "shifted_nonnegative": shifted,
        "per_unit": si.tolist(),
    }


DIAGNOSTIC = Diagnostic(
    "selectivity", "layer", lambda c: selectivity(c.fs),
    (Metric(name="selectivity", path="selectivity.mean", label="class selectivity", group="class structure",
            better=Better.DESCRIPTIVE, short="0 = all classes alike, 1 = one",
            meaning="mean class selectivity index: 0 = unit responds to all classes alike, 1 = to one class only",
            formula="SI = (μ_max − μ_−max)/(μ_max + μ_−max) over class-conditional mean activations",
            source="Morcos et al. 2018",
            reading="Descriptive. Morcos found selectivity a poor predictor of a unit's importance (see importance "
                    "ρ).",
            column="selectivity_mean", tag="selectivity"),),
)
