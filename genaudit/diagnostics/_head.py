"""Batched head evaluation: many modified copies of the features per head call."""

from __future__ import annotations

from typing import Callable

import numpy as np

Head = Callable[[np.ndarray], np.ndarray]
# A variant maker returns the modified features of variants `ks` stacked: (len(ks) * N, *feature_shape).
VariantMaker = Callable[[np.ndarray], np.ndarray]

CHUNK_BYTES = 16 << 20  # feature copies per head call (16 MB measured fastest: fits cache, bounds memory)


def variant_accuracies(head: Head, features: np.ndarray, reference: np.ndarray, n_variants: int,
                       make: VariantMaker) -> np.ndarray:
    """acc[k] = mean(argmax head(variant k) == reference), evaluating as many variants per call as fit."""
    per_variant = max(features.nbytes, 1)
    step = max(1, CHUNK_BYTES // per_variant)
    acc = np.empty(n_variants)
    n = len(features)
    for start in range(0, n_variants, step):
        ks = np.arange(start, min(start + step, n_variants))
        out = head(make(ks))
        pred = out.reshape(len(ks), n, -1).argmax(axis=2)
        acc[ks] = (pred == reference[None, :]).mean(axis=1)
    return acc


def normalized_auc(x: np.ndarray, acc: np.ndarray) -> float:
    """Trapezoid area under acc(x)/acc(x=0), divided by the x range: 1 = no loss at any level."""
    if acc[0] <= 0:
        return float("nan")
    return float(np.trapezoid(acc / acc[0], x) / (x[-1] - x[0]))


def broadcast_units(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape per-unit values (K x D) to broadcast over features of rank `ndim` (conv units are channels)."""
    return values.reshape(values.shape + (1,) * (ndim - 2))
