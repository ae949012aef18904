"""Selectivity beyond the Morcos index: information-based selectivity, single-unit importance, and whether
selective units matter (Morcos et al. 2018 found selectivity nearly uncorrelated with importance)."""

from __future__ import annotations

import math

import numpy as np

from genaudit.diagnostics._classes import Classes, entropy
from genaudit.diagnostics._head import clean_accuracy, head_view, memo_head
from genaudit.heads import Head
from genaudit.diagnostics.ablation import ablation, ablation_curve
from genaudit.features import FeatureSet
from genaudit.registry import Better, Context, Diagnostic, Metric


def mi_selectivity(fs: FeatureSet) -> dict:
    """Mutual information between the class and each unit's on/off state, as a fraction of the class entropy.

    A unit is "on" when its value (conv: channel spatial mean) is above its median over the samples, so a unit
    that is zero on most samples (ReLU) is on exactly when it fires; a constant unit is always off (MI 0).
    I(class; state) / H(class) in [0, 1]: 0 = the unit's state says nothing about the class, 1 = it removes all
    class uncertainty; a binary state carries at most ln 2 nats, so with more than two equally frequent classes
    the ceiling is ln 2 / ln J. Higher = more class-selective units (a description, not a verdict: Morcos found
    selective units no more important). 0 everywhere when only one class is present.
    """
    values = fs.unit_values().astype(np.float64)
    on = values > np.median(values, axis=0)
    groups = Classes.of(fs.reference)
    on_count = groups.sums(on)                                      # J x D
    joint = np.concatenate([on_count, groups.counts[:, None] - on_count])
    h_class = float(entropy(groups.counts))
    state = np.stack([on_count.sum(axis=0), len(on) - on_count.sum(axis=0)])
    mi = np.maximum(h_class + entropy(state) - entropy(joint), 0.0)   # I = H(C) + H(S) - H(C, S)
    score = mi / h_class if h_class > 0 else np.zeros_like(mi)
    return {"mean": float(score.mean()), "median": float(np.median(score)), "per_unit": score.tolist()}


def single_unit_importance(head: Head, fs: FeatureSet, units: np.ndarray | None = None) -> np.ndarray:
    """Per unit j (all units, or those in `units`): clean accuracy minus accuracy with unit j alone zeroed
    (conv: its whole channel), against the reference labels. Positive = the head needs the unit; larger = more
    important; can be negative."""
    d = fs.units
    units = np.arange(d) if units is None else np.asarray(units)
    clean = clean_accuracy(head, fs.features, fs.reference)
    first = (units[:, None] + np.arange(d)[None, :]) % d               # order j starts with unit j
    return clean - ablation_curve(head, fs, np.array([1.0 / d]), first)[:, 0]


def selectivity_ordered_ablation(head: Head, fs: FeatureSet, si: np.ndarray, levels: int = 21) -> dict:
    """Cumulative ablation (auc, curve) removing units by selectivity `si`: most selective first and least
    selective first (ties in index order). Higher auc = more robust to losing those units first; Morcos found
    removing selective units first no more harmful than removing unselective ones."""
    most = np.argsort(-np.asarray(si, np.float64), kind="stable")
    least = np.argsort(np.asarray(si, np.float64), kind="stable")

    def run(order: np.ndarray) -> dict:
        result = ablation(head, fs, levels=levels, order=order)
        curve = result["curve"]
        return {"auc": result["auc"], "curve": {"fraction": curve["fraction"], "accuracy": curve["accuracy"]}}

    return {"most_selective_first": run(most), "least_selective_first": run(least),
            "samples": int(len(fs.predictions))}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, tie, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie, ranks) / counts)[tie]


def importance_correlation(si: np.ndarray, importance: np.ndarray) -> dict:
    """Spearman rank correlation between unit selectivity and single-unit ablation importance, with its p-value.

    Near 0 = selective units are no more important than others (Morcos: 0.095 on MNIST MLPs); positive = the
    network relies on its selective units. None when either input is constant (correlation undefined).
    p_value: two-sided, large-sample normal approximation z = rho * sqrt(n - 1) (computed without scipy.stats,
    whose import alone costs about a second).
    """
    si, importance = np.asarray(si, np.float64), np.asarray(importance, np.float64)
    if len(si) < 2 or np.ptp(si) == 0 or np.ptp(importance) == 0:
        return {"spearman": None, "p_value": None}
    rho = float(np.corrcoef(_ranks(si), _ranks(importance))[0, 1])
    if not np.isfinite(rho):
        return {"spearman": None, "p_value": None}
    return {"spearman": rho, "p_value": math.erfc(abs(rho) * math.sqrt(len(si) - 1) / math.sqrt(2))}


def _ordered(c: Context) -> dict:
    si = np.asarray(c.results["selectivity"]["per_unit"])
    return selectivity_ordered_ablation(memo_head(c), head_view(c), si, levels=c.opts.ablation_levels)


def _importance(c: Context) -> dict:
    si = np.asarray(c.results["selectivity"]["per_unit"])
    rng = np.random.default_rng(c.opts.seed)
    units = np.sort(rng.choice(c.fs.units, size=min(c.fs.units, c.opts.importance_units), replace=False))
    view = head_view(c)
    importance = single_unit_importance(memo_head(c), view, units)
    return {**importance_correlation(si[units], importance), "units": int(len(units)),
            "samples": int(len(view.predictions))}


MUTUAL_INFORMATION = Diagnostic(
    "selectivity.mutual_information", "layer", lambda c: mi_selectivity(c.fs),
    (Metric(name="mi_selectivity", path="selectivity.mutual_information.mean", label="MI selectivity",
            group="class structure", better=Better.DESCRIPTIVE, short="class info in units' on/off state",
            meaning="information a unit's on/off state carries about the class, as a fraction of class entropy",
            formula="I(class; unit > median) / H(class)", source="Morcos et al. 2018 (mutual-information variant)",
            reading="Descriptive; with J balanced classes a binary state carries at most ln2/lnJ.",
            column="mi_selectivity_mean", tag="MI sel."),),
)
ORDERED_ABLATION = Diagnostic(
    "selectivity.ordered_ablation", "head", _ordered,
    (Metric(name="selectivity_ordered", path="selectivity.ordered_ablation.most_selective_first.auc",
            label="ablation AUC, selective first", group="robustness", better=Better.DESCRIPTIVE,
            short="ablation AUC, selective first",
            meaning="ablation AUC when the most class-selective units go first (compare with random order)",
            formula="as ablation AUC, with units ordered by decreasing selectivity index", source="Morcos et al. 2018",
            reading="Morcos found removing selective units first no more harmful than random: if this is much lower "
                    "than the random-order AUC, the network leans on its selective units.", tag="abl. sel."),),
    needs=("selectivity",),
)
IMPORTANCE = Diagnostic(
    "selectivity.importance_correlation", "head", _importance,
    (Metric(name="importance_rho", path="selectivity.importance_correlation.spearman",
            label="selectivity–importance ρ", group="class structure", better=Better.DESCRIPTIVE,
            short="ρ(selectivity, unit importance)",
            meaning="Spearman correlation of unit selectivity with the accuracy lost when that unit alone is zeroed",
            formula="ρ_Spearman(SI_j, acc(0) − acc(without j))", source="Morcos et al. 2018",
            reading="Morcos measured it near zero: selective units are not the important ones.", tag="SI–imp. ρ"),),
    needs=("selectivity",),
)

