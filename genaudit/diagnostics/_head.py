"""Batched head evaluation: many modified copies of the features per head call."""

from __future__ import annotations

from typing import Callable

import numpy as np

from genaudit.data import stratified_indices
from genaudit.features import FeatureSet
from genaudit.heads import AffineHead, Head
from genaudit.registry import Context
# A variant maker returns the modified features of variants `ks` stacked: (len(ks) * N, *feature_shape).
VariantMaker = Callable[[np.ndarray], np.ndarray]

CHUNK_BYTES = 16 << 20  # feature copies per head call (16 MB measured fastest: fits cache, bounds memory)


def head_view(c: Context) -> FeatureSet:
    """The samples the head-evaluated diagnostics (ablation, noise, ordered ablation, unit importance) measure
    their accuracies on. All audited samples when the head is closed-form (one affine map: a variant costs one
    small matrix product). Otherwise (a conv layer's head reruns on every one of ~220 variants) a seeded,
    class-stratified subsample of `head_samples` (0 = all): each accuracy is then an unbiased estimate of the
    all-sample one, and the diagnostic records how many samples it used (`samples`)."""
    n, limit = len(c.fs.predictions), c.opts.head_samples
    if c.cut.affine is not None or not limit or n <= limit:
        return c.fs
    return c.shared("head_view", lambda: c.fs.subset(stratified_indices(n, c.fs.reference, limit, c.opts.seed)))


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


def masked_accuracies(head: Head, features: np.ndarray, reference: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """acc[k] with the features multiplied by keep-mask k (masks: K x feature shape, broadcastable)."""
    if isinstance(head, AffineHead):  # (F * m) @ W = F @ (m[:, None] * W): no masked copies of F at all
        flat = features.reshape(len(features), -1).astype(np.float32)
        weight = head.weight.astype(np.float32)
        m = np.broadcast_to(masks, (len(masks), *features.shape[1:])).reshape(len(masks), -1).astype(np.float32)
        acc = np.empty(len(masks))
        step = max(1, CHUNK_BYTES // max(weight.nbytes + flat.shape[0] * weight.shape[1] * 4, 1))
        for start in range(0, len(masks), step):
            ks = slice(start, start + step)
            stacked = (m[ks, :, None] * weight[None]).transpose(1, 0, 2).reshape(weight.shape[0], -1)
            out = (flat @ stacked).reshape(len(flat), -1, weight.shape[1]) + head.bias  # one BLAS call
            acc[ks] = (out.argmax(axis=2) == reference[:, None]).mean(axis=0)
        return acc
    # Each distinct mask once: the curves repeat some (no unit or every unit zeroed, in every order).
    distinct, back = np.unique(masks.reshape(len(masks), -1), axis=0, return_inverse=True)
    distinct = distinct.reshape(len(distinct), *masks.shape[1:])
    acc = variant_accuracies(head, features, reference, len(distinct),
                             lambda ks: (features[None] * distinct[ks][:, None]).reshape(-1, *features.shape[1:]))
    return acc[back.reshape(-1)]


def shifted_accuracies(head: Head, features: np.ndarray, reference: np.ndarray, direction: np.ndarray,
                       scales: np.ndarray) -> np.ndarray:
    """acc[k] with the features moved to features + scales[k] * direction."""
    if isinstance(head, AffineHead):  # head(F + s D) = head(F) + s * (D @ W)
        base, delta = head(features), direction.reshape(len(direction), -1) @ head.weight
        return np.array([np.mean((base + s * delta).argmax(axis=1) == reference) for s in scales])
    return variant_accuracies(head, features, reference, len(scales),
                              lambda ks: np.concatenate([features + np.float32(scales[k]) * direction for k in ks]))


def normalized_auc(x: np.ndarray, acc: np.ndarray) -> float:
    """Trapezoid area under acc(x)/acc(x=0), divided by the x range: 1 = no loss at any level."""
    if acc[0] <= 0:
        return float("nan")
    return float(np.trapezoid(acc / acc[0], x) / (x[-1] - x[0]))


def broadcast_units(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape per-unit values (K x D) to broadcast over features of rank `ndim` (conv units are channels)."""
    return values.reshape(values.shape + (1,) * (ndim - 2))
