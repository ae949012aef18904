"""Cumulative ablation (Morcos et al. 2018; AL2): zero a growing fraction of units, watch accuracy fall.

A network that generalizes spreads what it knows over many units and degrades gracefully; a memorizing one
depends on few and collapses early. Higher ablation AUC = generalizes better.
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics._head import (
    ablation_view,
    broadcast_units,
    masked_accuracies,
    memo_head,
    normalized_auc,
)
from genaudit.heads import Head
from genaudit.features import FeatureSet
from genaudit.registry import Better, Diagnostic, Metric


def ablation_masks(units: int, fractions: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Keep-masks (R*P x D): for order r and fraction p, the first floor(p*D) units of order r are zeroed."""
    counts = np.floor(fractions * units + 1e-9).astype(int)
    rank = np.empty_like(orders)
    rows = np.arange(orders.shape[0])[:, None]
    rank[rows, orders] = np.arange(units)[None, :]            # rank[r, j] = position of unit j in order r
    return (rank[:, None, :] >= counts[None, :, None]).reshape(-1, units).astype(np.float32)


def ablation_curve(head: Head, fs: FeatureSet, fractions: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Accuracy (R x P) with the units of each order ablated cumulatively at each fraction."""
    masks = broadcast_units(ablation_masks(fs.units, fractions, orders), fs.features.ndim)
    acc = masked_accuracies(head, fs.features, fs.reference, masks)
    return acc.reshape(len(orders), len(fractions))


def ablation(head: Head, fs: FeatureSet, *, levels: int = 21, repeats: int = 5, seed: int = 0,
             order: np.ndarray | None = None) -> dict:
    """Cumulative ablation curve and AUC, averaged over `repeats` random unit orders (or one given order).

    auc: area under acc(p)/acc(0) for p in [0, 1]; higher = more robust = generalizes better.
    """
    fractions = np.linspace(0.0, 1.0, levels)
    rng = np.random.default_rng(seed)
    orders = order[None] if order is not None else np.stack([rng.permutation(fs.units) for _ in range(repeats)])
    acc = ablation_curve(head, fs, fractions, orders)
    mean = acc.mean(axis=0)
    per_order = [normalized_auc(fractions, row) for row in acc]
    return {
        "auc": normalized_auc(fractions, mean),
        # the spread of the AUC over unit orders (standard error of their mean): a seed spread, not a bound
        "standard_error": float(np.std(per_order) / np.sqrt(len(per_order))) if len(per_order) > 1 else None,
        "curve": {"fraction": fractions.tolist(), "accuracy": mean.tolist(), "std": acc.std(axis=0).tolist()},
        "repeats": int(len(orders)),
        "order": "given" if order is not None else "random",
        "samples": int(len(fs.predictions)),  # the samples the accuracies are measured on
    }


DIAGNOSTIC = Diagnostic(
    "ablation", "head",
    lambda c: ablation(memo_head(c), ablation_view(c), levels=c.opts.ablation_levels, repeats=c.opts.repeats, seed=c.opts.seed),
    (Metric(name="ablation", path="ablation.auc", label="ablation AUC", group="robustness", better=Better.HIGHER,
            short="accuracy kept as units are zeroed",
            meaning="accuracy kept as 0→100% of feature units are zeroed (random order), area relative to clean",
            formula="AUC = ∫₀¹ acc(p)/acc(0) dp, acc(p) with a random ⌊pD⌋ units zeroed, mean of R orders",
            source="Morcos et al. 2018, 'On the importance of single directions for generalization'; AL2 (El Helou "
                   "2020)",
            reading="Networks that memorize rely on few directions and collapse early; a generalizing one degrades "
                    "gracefully. Compare models of one architecture and data set: absolute values are not thresholds.",
            tag="ablation", headline=True, error="ablation.standard_error"),),
)
