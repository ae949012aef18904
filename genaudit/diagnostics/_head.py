"""Batched head evaluation: many modified copies of the features per head call, and each distinct variant
evaluated once per audit.

The head-evaluated diagnostics (ablation, noise, ordered ablation, unit importance) read the head's *predicted
class* for each variant of the features and compare it with a reference. A `MemoHead` remembers those
predictions by variant, so a variant two diagnostics share (the unmasked features are the first point of every
ablation curve and the importance's clean accuracy; every unit zeroed is the last point of every curve) is
evaluated once, and the label-free rerun a labelled audit makes for its score (`Context.without_labels`) compares
the same predictions against the clean predictions instead of evaluating the head again (both measure on the same
samples: `head_view`). On the CPU the head's
outputs for a sample do not depend on which other rows share its onnxruntime call, so a remembered prediction is
the one a fresh evaluation gives (tests/test_head_reuse.py).
"""

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
    small matrix product). Otherwise (a conv layer's head reruns on every one of ~220 variants) a seeded
    subsample of `head_samples` (0 = all), stratified by the model's clean predicted class: each accuracy is then
    an unbiased estimate of the all-sample one, and the diagnostic records how many samples it used (`samples`).
    The subsample depends on the model's outputs only, never on the labels, so a labelled audit and the
    label-free rerun of its score measure on the same samples and share the head's outputs."""
    fs = c.fs
    n, limit = len(fs.predictions), c.opts.head_samples
    if c.cut.affine is not None or not limit or n <= limit:
        return fs
    rows, features = c.common("head_rows", lambda: _rows(fs, limit, c.opts.seed))
    return c.shared("head_view", lambda: fs.subset(rows, features))


def ablation_view(c: Context) -> FeatureSet:
    """The samples the random-order ablation measures on: the head view (`head_view`), except at a head that is
    not affine with `head_samples` set (not 0), where it is a nested subsample of the view of at most
    `head_samples` // 2 samples, stratified by the clean predicted class like the view. The ablation AUC averages
    `repeats` random unit orders and its error is mostly their spread, which more samples do not reduce: over
    1,000 draws of the subsample and the orders, its standard deviation on 250 samples is 0-4% larger than on 500
    on the sample CNN's conv layers and ResNet-18's layer3 (bench/head_precision.py, docs/performance.md), while
    the ablation is half of the head's evaluations. The other head curves, whose error is the samples', keep the
    whole view."""
    view = head_view(c)
    n, limit = len(view.predictions), max(1, c.opts.head_samples // 2)
    if c.cut.affine is not None or not c.opts.head_samples or n <= limit:
        return view
    rows, features = c.common("ablation_rows", lambda: _rows(view, limit, c.opts.seed))
    return c.shared("ablation_view", lambda: view.subset(rows, features))


def memo_head(c: Context) -> MemoHead:
    """The audit's head, remembering its predictions on the variants it evaluates (shared with the label-free
    rerun of the score)."""
    return c.common("head", lambda: MemoHead(c.head))


def _rows(fs: FeatureSet, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = stratified_indices(len(fs.predictions), fs.predictions, limit, seed)
    return rows, fs.features[rows]


class MemoHead:
    """A head that remembers the predicted class of every sample under each masked variant of a feature array it
    has evaluated, keyed by the array (held here, so its id is never reused while remembered) and the mask. Each
    distinct variant is evaluated once, however many diagnostics ask for it and whatever they compare it with.
    Called as a function, it is the head."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self._seen: dict[int, tuple[np.ndarray, dict[tuple, np.ndarray]]] = {}
        self._affine: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # `affine_basis` of each array, made once
        self.evaluated = 0  # distinct variants evaluated (for tests and profiling)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.head(features)

    def masked_predictions(self, features: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """predictions[k] (K x N): the predicted classes with the features multiplied by keep-mask k."""
        _, memo = self._seen.setdefault(id(features), (features, {}))
        masks = np.asarray(masks, np.float32)
        keys = [(m.shape, m.tobytes()) for m in masks]
        new = {}  # key -> the first mask with it, for the variants not seen yet
        for k, key in enumerate(keys):
            if key not in memo:
                new.setdefault(key, k)
        if new:
            chosen = masks[list(new.values())]
            if isinstance(self.head, AffineHead):
                if id(features) not in self._affine:
                    self._affine[id(features)] = affine_basis(self.head, features)
                found = _affine_masked_predictions(self.head, features, chosen, self._affine[id(features)])
            else:
                found = masked_predictions(self.head, features, chosen)
            memo.update(zip(new, found))
            self.evaluated += len(new)
        return np.stack([memo[key] for key in keys])


def _class_dtype(classes: int) -> np.dtype:
    """The smallest unsigned type holding class ids 0..classes-1 (remembered predictions stay small)."""
    return np.min_scalar_type(max(classes - 1, 0))


def variant_predictions(head: Head, features: np.ndarray, n_variants: int, make: VariantMaker) -> np.ndarray:
    """pred[k] = argmax head(variant k) for every sample (K x N), evaluating as many variants per call as fit."""
    per_variant = max(features.nbytes, 1)
    step = max(1, CHUNK_BYTES // per_variant)
    n = len(features)
    pred = None
    for start in range(0, n_variants, step):
        ks = np.arange(start, min(start + step, n_variants))
        out = head(make(ks))
        out = out.reshape(len(ks), n, -1)
        if pred is None:
            pred = np.empty((n_variants, n), _class_dtype(out.shape[2]))
        pred[ks] = out.argmax(axis=2)
    return pred if pred is not None else np.empty((0, n), np.uint8)


def variant_accuracies(head: Head, features: np.ndarray, reference: np.ndarray, n_variants: int,
                       make: VariantMaker) -> np.ndarray:
    """acc[k] = mean(argmax head(variant k) == reference), evaluating as many variants per call as fit."""
    return accuracies(variant_predictions(head, features, n_variants, make), reference)


def accuracies(predictions: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """acc[k] = share of samples whose prediction under variant k (predictions: K x N) equals the reference."""
    return (predictions == reference[None, :]).mean(axis=1)


def masked_predictions(head: Head, features: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """pred[k] (K x N): the predicted classes with the features multiplied by keep-mask k (masks: K x feature
    shape, broadcastable). A `MemoHead` evaluates only the masks it has not seen."""
    if isinstance(head, MemoHead):
        return head.masked_predictions(features, masks)
    if isinstance(head, AffineHead):
        return _affine_masked_predictions(head, features, masks)
    # Each distinct mask once: the curves repeat some (no unit or every unit zeroed, in every order).
    distinct, back = np.unique(masks.reshape(len(masks), -1), axis=0, return_inverse=True)
    distinct = distinct.reshape(len(distinct), *masks.shape[1:])
    pred = variant_predictions(head, features, len(distinct),
                               lambda ks: (features[None] * distinct[ks][:, None]).reshape(-1, *features.shape[1:]))
    return pred[back.reshape(-1)]


def masked_accuracies(head: Head, features: np.ndarray, reference: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """acc[k] with the features multiplied by keep-mask k (masks: K x feature shape, broadcastable)."""
    return accuracies(masked_predictions(head, features, masks), reference)


def clean_accuracy(head: Head, features: np.ndarray, reference: np.ndarray) -> float:
    """The accuracy of the head on the unmodified features. A head that is not affine reads it as the variant
    with every unit kept (features * 1 are the features, bit for bit), which a `MemoHead` has usually seen."""
    if isinstance(head, AffineHead) or (isinstance(head, MemoHead) and isinstance(head.head, AffineHead)):
        return float(variant_accuracies(head, features, reference, 1, lambda ks: features)[0])
    keep = np.ones((1, *features.shape[1:2]) + (1,) * (features.ndim - 2), np.float32)
    return float(masked_accuracies(head, features, reference, keep)[0])


def shifted_accuracies(head: Head, features: np.ndarray, reference: np.ndarray, direction: np.ndarray,
                       scales: np.ndarray) -> np.ndarray:
    """acc[k] with the features moved to features + scales[k] * direction."""
    inner = head.head if isinstance(head, MemoHead) else head
    if isinstance(inner, AffineHead):  # head(F + s D) = head(F) + s * (D @ W)
        base, delta = inner(features), direction.reshape(len(direction), -1) @ inner.weight
        return np.array([np.mean((base + s * delta).argmax(axis=1) == reference) for s in scales])
    acc = np.empty(len(scales))
    todo = np.arange(len(scales))
    zero = scales == 0
    if zero.any() and _same_bits(features + np.float32(0) * direction, features):
        acc[zero] = clean_accuracy(head, features, reference)  # the unmodified features: already evaluated
        todo = np.flatnonzero(~zero)
    acc[todo] = variant_accuracies(inner, features, reference, len(todo), lambda ks: np.concatenate(
        [features + np.float32(scales[k]) * direction for k in todo[ks]]))
    return acc


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def normalized_auc(x: np.ndarray, acc: np.ndarray) -> float:
    """Trapezoid area under acc(x)/acc(x=0), divided by the x range: 1 = no loss at any level."""
    if acc[0] <= 0:
        return float("nan")
    return float(np.trapezoid(acc / acc[0], x) / (x[-1] - x[0]))


def broadcast_units(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape per-unit values (K x D) to broadcast over features of rank `ndim` (conv units are channels)."""
    return values.reshape(values.shape + (1,) * (ndim - 2))


def affine_basis(head: AffineHead, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `_affine_masked_predictions` reads of features F: F's columns (D x N, a few units' values are a few
    rows) and the clean logits head(F) in float64. A `MemoHead` makes them once per feature array."""
    return np.ascontiguousarray(features.reshape(len(features), -1).T), np.asarray(head(features), np.float64)


def _affine_masked_predictions(head: AffineHead, features: np.ndarray, masks: np.ndarray,
                               basis: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """pred[k] (K x N) at an affine head, in float64, without masked copies of the features: the logits of
    F * m are b + sum_u m_u F_u W_u, so each variant's logits are those of a variant already known (every unit
    kept: `head(F)`, the clean outputs bit for bit; every unit zeroed: b; the previous mask) plus the units whose
    mask differs from it, whichever differs in fewest. A cumulative ablation curve then costs one pass over the
    units per order instead of one per level, and a single unit zeroed costs one unit. `basis`: `affine_basis`
    of these features, when already made."""
    n = len(features)
    columns, clean = basis if basis is not None else affine_basis(head, features)
    # one keep value per flattened feature (a conv unit's mask covers its whole channel)
    m = np.broadcast_to(masks, (len(masks), *features.shape[1:])).reshape(len(masks), -1).astype(np.float64)
    weight = np.asarray(head.weight, np.float64)
    bias = np.broadcast_to(np.asarray(head.bias, np.float64), (n, weight.shape[1]))
    bases = [(np.ones(m.shape[1]), clean), (np.zeros(m.shape[1]), bias)]
    pred = np.empty((len(masks), n), _class_dtype(weight.shape[1]))
    for k, mask in enumerate(m):
        base, logits = min(bases, key=lambda b: np.count_nonzero(b[0] != mask))
        differ = np.flatnonzero(base != mask)
        if len(differ):
            change = (mask[differ] - base[differ])[:, None] * weight[differ]
            logits = logits + columns[differ].astype(np.float64).T @ change
        pred[k] = logits.argmax(axis=1)
        bases[2:] = [(mask, logits)]
    return pred
