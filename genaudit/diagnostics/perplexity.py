"""Layer perplexity and nodes as classifiers (Davel, Theunissen, Pretorius & Barnard, "DNNs as layers of
cooperating classifiers", AAAI 2020): the layer read as a discrete system of on/off nodes.

A unit is "on" for a sample when its value is > 0 (the ReLU gate T(x)). Conv layers use the channel's spatial
mean, which for a ReLU map is > 0 exactly when some position is on; for maps that can be negative it is the sign
of the mean. Both measures depend only on the on/off states, so they are unchanged by positive rescaling.
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics._classes import Classes, entropy
from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric

ROWS = 4096  # samples scored per block by nodes_as_classifiers (bounds the N x J score matrix)


def on_states(fs: FeatureSet) -> np.ndarray:
    """Binary activation pattern (N x D bool): unit on iff its value (conv: channel spatial mean) is > 0."""
    return fs.unit_values() > 0


def perplexity(fs: FeatureSet) -> dict:
    """Per-class perplexity of the layer's on/off patterns, relative to the class size.

    For class c with N_c samples, K(c) = its distinct patterns with counts n: H(c) = -sum (n/N_c) ln(n/N_c),
    P(c) = e^H(c) (the effective number of patterns, 1..N_c). value = mean over classes of P(c)/N_c: 1 = every
    sample has its own pattern, 1/N_c = the whole class shares one. Descriptive: Davel et al. give no better
    side, and on genaudit's sample models the memorizing MLP had the *lower* value (see the README), so it is
    not read as a predictor. It depends on N_c, so compare on equal sample counts. per_class: P(c)/N_c, perplexity: P(c), in the order
    of `classes`.
    """
    packed = np.packbits(on_states(fs), axis=1)                     # N x ceil(D/8) bytes: one row per pattern
    groups = Classes.of(fs.reference)
    perp = np.empty(groups.n)
    for k in range(groups.n):
        _, counts = np.unique(packed[groups.index == k], axis=0, return_counts=True)
        perp[k] = np.exp(entropy(counts))
    relative = perp / groups.counts
    return {
        "value": float(relative.mean()),
        "per_class": relative.tolist(),
        "perplexity": perp.tolist(),
        "classes": groups.labels.tolist(),
        "samples": groups.counts.tolist(),
    }


def nodes_as_classifiers(fs: FeatureSet) -> dict:
    """How well the layer's on/off nodes classify, one at a time and combined (Davel et al., discrete system).

    Davel et al. estimate P(class | observation) at every node and combine the estimates over the layer; their
    discrete estimator counts the samples of each class with the node on and off, which is what this does (their
    continuous KDE estimator for "on" values is not implemented). Per node n and state s: P(c | s) = (count of
    class c among samples in state s + 1) / (samples in state s + J), Laplace smoothing 1, J = classes present.
    Combined over the layer as naive Bayes (nodes independent given the class):
    score(c) = ln P(c) + sum_n [ln P(c | s_n) - ln P(c)], P(c) = class frequency; prediction = argmax score.

    accuracy: fraction of samples whose combined prediction is the reference label; higher = the layer's on/off
    code alone carries the class, as the paper's cooperating classifiers do. mean_node_accuracy: mean over units
    of one node's accuracy predicting argmax P(c | state) (per_unit: each node's). majority: accuracy of always
    predicting the most frequent class, the floor both are read against. The estimates are fitted and scored on
    the same samples (in-sample, as the paper's training-set curves). Ties between top classes give each tied
    class an equal share of the credit, so the numbers do not depend on how classes are numbered.
    """
    on = on_states(fs)
    groups = Classes.of(fs.reference)
    n, j = len(on), groups.n
    on_count = groups.sums(on)                                      # J x D samples of class c with node on
    off_count = groups.counts[:, None] - on_count
    log_prior = np.log(groups.counts / n)
    log_on = np.log((on_count + 1) / (on_count.sum(axis=0) + j)) - log_prior[:, None]
    log_off = np.log((off_count + 1) / (off_count.sum(axis=0) + j)) - log_prior[:, None]
    base = log_prior + log_off.sum(axis=1)                          # every node off; "on" swaps its term
    credit = np.empty(n)
    for start in range(0, n, ROWS):
        rows = slice(start, start + ROWS)
        score = base + on[rows].astype(np.float64) @ (log_on - log_off).T
        top = score.max(axis=1, keepdims=True)
        tied = score >= top - 1e-9 * np.maximum(1.0, np.abs(top))
        credit[rows] = tied[np.arange(len(score)), groups.index[rows]] / tied.sum(axis=1)
    # one node predicts the majority class of its state; under ties any choice earns the same count
    node = (on_count.max(axis=0) + off_count.max(axis=0)) / n
    return {
        "accuracy": float(credit.mean()),
        "mean_node_accuracy": float(node.mean()),
        "majority": float(groups.counts.max() / n),
        "per_unit": node.tolist(),
    }


PERPLEXITY = Diagnostic(
    "perplexity", "layer", lambda c: perplexity(c.fs),
    (Metric(name="perplexity", path="perplexity.value", label="layer perplexity / N_c", group="class structure",
            better=Better.DESCRIPTIVE, short="distinct on/off codes per sample",
            meaning="effective number of on/off activation patterns per class, relative to the class size",
            formula="mean_c e^{H(c)}/N_c, H(c) the entropy of class c's binary activation patterns",
            source="Davel et al. 2020, 'DNNs as layers of cooperating classifiers'",
            reading="1 = every sample its own pattern; lower = samples of a class share codes. Descriptive: the paper "
                    "gives no better side and on the sample models the memorizing MLP scored lower. Depends on N_c.",
            column="perplexity", tag="perplexity"),),
)
NODES = Diagnostic(
    "nodes", "layer", lambda c: nodes_as_classifiers(c.fs),
    (Metric(name="nodes", path="nodes.accuracy", label="nodes-as-classifiers accuracy", group="class structure",
            better=Better.HIGHER, short="naive-Bayes vote of on/off states",
            meaning="accuracy of a naive-Bayes vote of every unit's on/off state used as a class estimator",
            formula="argmax_c ln P(c) + Σ_n [ln P(c | s_n) − ln P(c)]", source="Davel et al. 2020",
            reading="How much class information the layer's binary code carries, unit by unit (in-sample).",
            column="nodes_accuracy", tag="nodes", headline=True),),
)

