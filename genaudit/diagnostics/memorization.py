"""Which training samples did the model memorize? A per-sample suspicion score from the trained model and its
training data alone (no retraining), and the memorization summary of the scorecard.

For each audited sample n with given label y_n, its 10 nearest audited neighbours (leave-one-out, Euclidean, as
the neighbour votes of `genaudit.diagnostics.neighbours`) are found in the input space, in the model's early
layer (its first activation) and in its feature layer; d_space(n) = the fraction of them whose given label
differs from y_n. A wrong or atypical label is
outvoted by its neighbours; a model that nevertheless predicts it has memorized it.

    suspicion(n) = mean over spaces of d_space(n)       (in [0, 1]; higher = more likely mislabeled)

`suggested` is the neighbours' vote in input space (the label the neighbourhood suggests). The study behind the
choice of spaces and its AUROC against cleanlab's self-confidence is docs/suspects.md.
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics.neighbours import K, neighbours_in, voters
from genaudit.registry import Context, Diagnostic, Metric

SPACES = ("input", "early", "features")  # where the neighbours that judge a label are found (docs/suspects.md)
THRESHOLD = 0.5  # suspicion above this: the neighbours outvote the given label


def disagreement(indices: np.ndarray, labels: np.ndarray, k: int = K) -> np.ndarray:
    """For each sample, the fraction of its first k neighbours (rows of `indices`) whose label differs from its own."""
    labels = np.asarray(labels).reshape(-1)
    return np.mean(labels[indices[:, :k]] != labels[:, None], axis=1)


def signals(c: Context, every: bool = False) -> dict[str, np.ndarray]:
    """The per-sample signals of the suspicion, d_<space> for every space the audit has, for the voters of
    the neighbour votes (`every`: for every audited sample, in audited order)."""
    reference = c.fs.reference[voters(c, every)]
    out = {}
    for space in SPACES:
        found = neighbours_in(c, space, every)
        if found is not None:
            out[f"d_{space}"] = disagreement(found[0], reference)
    return out


def suspicion(found: dict[str, np.ndarray]) -> np.ndarray:
    """The suspicion of every sample from its signals (see the module docstring)."""
    return np.mean(np.stack(list(found.values())), axis=0)


def memorized(c: Context) -> dict | None:
    """The scorecard's memorization summary: the share of audited samples whose given label the neighbours
    outvote (suspicion > 0.5) and which the model nevertheless predicts — the estimated share of memorized
    training samples. Needs the given labels."""
    if not c.fs.labels_used:
        return None
    chosen = voters(c)
    outvoted = suspicion(signals(c)) > THRESHOLD
    fits = c.fs.predictions[chosen] == c.fs.labels[chosen]
    return {"fraction": float(np.mean(outvoted & fits)), "suspect_fraction": float(np.mean(outvoted)),
            "threshold": THRESHOLD, "spaces": list(SPACES), "samples": int(len(chosen))}


MEMORIZATION = Diagnostic(
    "memorization", "space", memorized,
    (Metric("memorized", "memorization.fraction", "memorized training samples", "estimate", "lower",
            "labels fit against the neighbours",
            "estimated share of training samples the model memorized: their given label is outvoted by their "
            "neighbours (suspicion > 0.5) and the model predicts it anyway",
            "mean_n [suspicion_n > 0.5 and ŷ_n = y_n], suspicion = mean over spaces of neighbour label disagreement",
            "genaudit suspects study (docs/suspects.md)",
            "Lower is better. `genaudit suspects` lists which samples; with wrong labels in the data it estimates "
            "how many of them the model learned by rote.", tag="memorized"),),
)
