"""Activation magnitude (AL2, El Helou et al.): the mean squared activation of the feature layer.

L_r = mean over samples of ||phi(x)||^2 / D, phi(x) the sample's whole feature tensor (conv: every position of
every channel) and D its number of elements. AL2 finds that memorizing networks (training on corrupt labels)
grow ever larger activations, and penalizing L_r improves generalization: lower = better. It is
scale-dependent (multiplying the features by k multiplies it by k^2): compare models of one architecture.
"""

from __future__ import annotations

import numpy as np

from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric


def per_sample_magnitude(features: np.ndarray) -> np.ndarray:
    """||phi(x)||^2 / D for each sample of a feature batch (any shape with samples first)."""
    f = features.reshape(len(features), -1).astype(np.float64)
    return np.einsum("ij,ij->i", f, f) / f.shape[1]


def magnitude(fs: FeatureSet) -> dict:
    """AL2 activation loss L_r of the layer's features: mean squared element; lower = better."""
    return {"value": float(np.mean(per_sample_magnitude(fs.features)))}


DIAGNOSTIC = Diagnostic(
    "magnitude", "layer", lambda c: magnitude(c.fs),
    (Metric(name="magnitude", path="magnitude.value", label="activation magnitude L_r", group="magnitude",
            better=Better.LOWER, short="mean squared activation",
            meaning="mean squared activation of the feature layer (scale-dependent: compare one architecture)",
            formula="L_r = mean_x ‖φ(x)‖² / D", source="AL2 (El Helou, Dümbgen, Süsstrunk, ICASSP 2020)",
            reading="Memorizing networks grow large activations; AL2 penalizes L_r progressively.", column="magnitude",
            tag="L_r"),),
)
