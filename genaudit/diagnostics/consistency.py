"""Consistency of representations (NSR lemma, Mao et al.; Natekar & Sharma, PGDL): a Davies-Bouldin index.

C = (1/J) sum_i max_{j != i} (S_i + S_j) / M_ij, with S_i the mean Euclidean distance of class-i feature vectors
to their centroid and M_ij the distance between centroids i and j. It compares how spread each class is with how
far it is from its most confusable rival: lower = classes tight relative to their separation = generalizes better.
It is scale-free (spreads and distances scale alike).
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics._classes import Classes
from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric


def consistency(fs: FeatureSet) -> dict:
    """Davies-Bouldin consistency C of the unit values (N x D; conv: channel spatial means), classes = reference.

    A class with one sample has S_i = 0. Two classes with coincident centroids (M_ij = 0) cannot be told apart:
    their ratio is +inf (also when both spreads are 0), so C is infinite; that is reported as value None with
    coincident_pairs > 0. With fewer than two classes C is undefined: value None, classes < 2.
    """
    groups = Classes.of(fs.reference)
    if groups.n < 2:
        return {"value": None, "classes": groups.n, "coincident_pairs": 0}
    values = fs.unit_values().astype(np.float64)
    centroids = groups.means(values)
    # each sample's distance to its class centroid, as np.linalg.norm(values - centroids[index], axis=1) sums it
    distance = np.sqrt(groups.squared_residuals(values, centroids).sum(axis=1))
    spread = groups.sums(distance[:, None])[:, 0] / groups.counts
    # row by row from differences (not the |a|^2+|b|^2-2ab shortcut), so coincident centroids give exact zeros
    dist = np.stack([np.linalg.norm(centroids - c, axis=1) for c in centroids])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (spread[:, None] + spread[None, :]) / dist
    ratio[dist == 0] = np.inf                   # coincident centroids, also when both spreads are 0
    np.fill_diagonal(ratio, -np.inf)
    c = float(ratio.max(axis=1).mean())
    coincident = int(np.sum(dist == 0) - groups.n) // 2
    return {"value": c if np.isfinite(c) else None, "classes": groups.n, "coincident_pairs": coincident}


DIAGNOSTIC = Diagnostic(
    "consistency", "layer", lambda c: consistency(c.fs),
    (Metric(name="consistency", path="consistency.value", label="consistency C", group="class structure",
            better=Better.LOWER, short="class spread / rival distance",
            meaning="Davies–Bouldin index of the class clusters: spread relative to distance to the nearest rival "
                    "class", formula="C = (1/J) Σ_i max_{j≠i} (S_i + S_j)/M_ij",
            source="NSR lemma (Mao et al.); Natekar & Sharma (PGDL 2020)",
            reading="Lower = classes tight relative to their separation. NSR drives it towards 0.",
            column="consistency", tag="C"),),
)
