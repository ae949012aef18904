"""Noise robustness (Morcos et al. 2018): add Gaussian noise of std s*sigma_j to each unit j.

sigma_j is unit j's standard deviation over the data, so s is noise in units of each unit's own spread.
Higher noise AUC = accuracy holds under larger perturbations = generalizes better.
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics._head import (
    broadcast_units,
    head_view,
    memo_head,
    normalized_auc,
    shifted_accuracies,
)
from genaudit.heads import Head
from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric


def unit_std(features: np.ndarray) -> np.ndarray:
    """Std of each unit over samples (and positions, for conv channels)."""
    axes = (0,) + tuple(range(2, features.ndim))
    return features.std(axis=axes)


def noise_robustness(head: Head, fs: FeatureSet, *, levels: int = 11, max_scale: float = 2.0,
                     seed: int = 0) -> dict:
    """Accuracy under unit-scaled Gaussian noise at scales 0..max_scale, and its normalized AUC."""
    scales = np.linspace(0.0, max_scale, levels)
    f = fs.features
    # One draw of unit-scaled noise, shared by every level (common random numbers: the curve compares
    # levels, not draws, and is monotone in expectation without the variance of independent draws).
    direction = broadcast_units(unit_std(f)[None], f.ndim) * np.random.default_rng(seed).standard_normal(
        f.shape, dtype=np.float32)
    acc = shifted_accuracies(head, f, fs.reference, direction, scales)
    return {
        "auc": normalized_auc(scales, acc),
        "curve": {"scale": scales.tolist(), "accuracy": acc.tolist()},
        "samples": int(len(fs.predictions)),  # the samples the accuracies are measured on
    }


DIAGNOSTIC = Diagnostic(
    "noise", "head",
    lambda c: noise_robustness(memo_head(c), head_view(c), levels=c.opts.noise_levels, max_scale=c.opts.noise_max,
                               seed=c.opts.seed),
    (Metric(name="noise", path="noise.auc", label="noise AUC", group="robustness", better=Better.HIGHER,
            short="accuracy kept under unit noise",
            meaning="accuracy kept as Gaussian noise up to 2σ of each unit is added, area relative to clean",
            formula="AUC = (1/s_max) ∫₀^s_max acc(s)/acc(0) ds, unit j perturbed by N(0, (s σ_j)²)",
            source="Morcos et al. 2018",
            reading="Robustness to perturbing all units in random directions; lower for memorizing networks.",
            tag="noise"),),
)
