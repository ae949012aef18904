"""The one trunk pass: features of the chosen layer, clean outputs and predictions for every sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from genaudit.errors import GenauditError
from genaudit.registry import Better, Metric


@dataclass
class FeatureSet:
    """Features F (N x units [x H x W]) of one layer with the clean predictions and the reference labels.

    `reference` is what accuracy is measured against: the true labels when given, otherwise the model's own
    clean predictions (so accuracy means agreement with the unmodified model).
    """

    features: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray | None

    @property
    def labels_used(self) -> bool:
        return self.labels is not None

    def without_labels(self) -> FeatureSet:
        """The same features with the model's own predictions as the reference (label-free)."""
        return FeatureSet(self.features, self.logits, self.predictions, None)

    @property
    def reference(self) -> np.ndarray:
        return self.labels if self.labels_used else self.predictions

    @property
    def units(self) -> int:
        return self.features.shape[1]

    @property
    def clean_accuracy(self) -> float | None:
        """Fraction of samples the unmodified model classifies correctly (None without labels)."""
        return None if self.labels is None else float(np.mean(self.predictions == self.labels))

    def unit_values(self) -> np.ndarray:
        """One value per sample and unit (N x D): conv feature maps are averaged over space."""
        return unit_values(self.features)

    def subset(self, index: np.ndarray, features: np.ndarray | None = None) -> FeatureSet:
        """The same layer for the samples at `index` only (`features`: their feature rows, when already taken)."""
        return FeatureSet(self.features[index] if features is None else features, self.logits[index],
                          self.predictions[index], None if self.labels is None else self.labels[index])


def unit_values(features: np.ndarray) -> np.ndarray:
    """Per sample and unit (N x D): vectors as they are, conv maps (N x C x H x W) averaged over space."""
    f = features
    return f.reshape(f.shape[0], f.shape[1], -1).mean(axis=2) if f.ndim > 2 else f


def share_error(share: float | None, n: int) -> float | None:
    """Sampling standard error of a share of n samples (an accuracy, an agreement): sqrt(p (1 - p) / n)."""
    return None if share is None or n < 1 else float(np.sqrt(max(share * (1 - share), 0.0) / n))


def flat_pooled(x: np.ndarray, max_dims: int) -> np.ndarray:
    """Samples as float32 vectors of at most `max_dims` values: image-like arrays (N, C, H, W) larger than that
    are average-pooled over square spatial blocks first (the bottom/right rows that do not fill a block are
    dropped), so distances between samples stay meaningful and bounded in memory. Smaller arrays are only
    flattened."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x[0].size > max_dims:
        c, h, w = x.shape[1:]
        f = max(2, int(np.sqrt(x[0].size / max_dims)))  # the smallest block that fits, from below
        while c * (h // f) * (w // f) > max_dims:
            f += 1
        x = _block_means(x, f)
    return x.reshape(len(x), -1)


def _block_means(x: np.ndarray, f: int) -> np.ndarray:
    """The means of the f x f blocks of x (N, C, H, W): numpy's `mean` over the block axes of the (N, C, H/f, f,
    W/f, f) view, bit for bit. numpy sums those blocks row by row (each row of f values by its pairwise sum,
    sequential below 8 values; the rows added one after another onto a zero) and divides by the count as an
    intp; `_fast_block_means` does the same additions on whole strided slices, far faster than numpy's short
    inner loops. It is used only for geometries where a probe shows it equal to numpy's mean bit for bit."""
    n, c, h, w = x.shape
    h2, w2 = h // f, w // f
    if n and _fast_block_means_ok(c, h, w, f):
        return _fast_block_means(x, f)
    return x[:, :, : h2 * f, : w2 * f].reshape(n, c, h2, f, w2, f).mean(axis=(3, 5))


def _fast_block_means(x: np.ndarray, f: int) -> np.ndarray:
    h2, w2 = x.shape[2] // f, x.shape[3] // f

    def at(r: int, j: int) -> np.ndarray:  # the values at row r, column j of every block: (N, C, H/f, W/f)
        return x[:, :, r : h2 * f : f, j : w2 * f : f]

    def row(r: int) -> np.ndarray:
        if f >= 8:  # numpy's own pairwise sum of each block row
            return np.add.reduce(x[:, :, r : h2 * f : f, : w2 * f].reshape(*x.shape[:2], h2, w2, f), axis=-1)
        s = at(r, 0) + at(r, 1)
        for j in range(2, f):
            s += at(r, j)
        return s

    out = row(0)
    out += np.float32(0.0)  # numpy adds the rows onto a zero (this only turns -0.0 into 0.0)
    for r in range(1, f):
        out += row(r)
    return np.true_divide(out, np.intp(f * f), out=out, casting="unsafe")


_PROBED: dict[tuple[int, int, int, int], bool] = {}


def _fast_block_means_ok(c: int, h: int, w: int, f: int) -> bool:
    """Whether `_fast_block_means` equals numpy's mean bit for bit for this geometry (the order of numpy's
    additions depends on the shape only, e.g. a single block column is summed as one run of f * f values):
    checked once per geometry on a random probe of at least 1,024 block means (two samples or more), zeros of
    both signs and subnormal results included."""
    key = (c, h, w, f)
    if key not in _PROBED:
        h2, w2 = h // f, w // f
        n = max(2, -(-1024 // max(1, c * h2 * w2)))
        probe = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(np.float32)
        probe[0, 0, :f, :f] = -0.0
        probe[1, -1, :f, :f] *= np.float32(1e-38)  # subnormal results
        want = probe[:, :, : h2 * f, : w2 * f].reshape(n, c, h2, f, w2, f).mean(axis=(3, 5))
        _PROBED[key] = want.tobytes() == _fast_block_means(probe, f).tobytes()
    return _PROBED[key]


class Rows:
    """Samples (already flat vectors) kept as the list of batches they were computed in, indexed like their
    concatenation by an array of positions: `rows[chosen]` (and `take`, straight into another dtype) copy only
    the rows asked for, never the whole N x D matrix (`np.asarray(rows)` concatenates it). The neighbour votes
    read only their voters' rows."""

    def __init__(self, parts: list[np.ndarray], positions: np.ndarray | None = None) -> None:
        """`positions`: the audited positions of the rows kept (ascending), when the trunk pass kept only some
        samples' rows (the voters); `take` then indexes by audited position. None: every sample, in order."""
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.positions = positions

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple:
        return (len(self), *self.parts[0].shape[1:]) if self.parts else (0,)

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype if self.parts else np.dtype(np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.parts) if self.parts else np.empty(self.shape, self.dtype)
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getitem__(self, index) -> np.ndarray:
        return self.take(np.arange(len(self))[index] if isinstance(index, slice) else index)

    def take(self, index, dtype=None) -> np.ndarray:
        """The rows at `index` (positions, or a boolean mask), as `dtype` (default: as kept)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        if self.positions is not None:  # audited positions -> the kept rows holding them
            local = np.minimum(np.searchsorted(self.positions, index), len(self.positions) - 1)
            if len(index) and np.any(self.positions[local] != index):
                raise IndexError("rows asked for that the trunk pass did not keep (only the voters' rows are kept)")
            index = local
        index = np.where(index < 0, index + len(self), index).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")
        out = np.empty((len(index), *self.shape[1:]), self.dtype if dtype is None else dtype)
        part = np.searchsorted(self.starts, index, side="right") - 1
        for b in np.unique(part):
            at = part == b
            out[at] = self.parts[b][index[at] - self.starts[b]]
        return out


def compute_features(
    trunk: Callable[[np.ndarray], list[np.ndarray]],
    batches,
    labels: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
    extra: Callable[[list[np.ndarray]], None] | None = None,
) -> FeatureSet:
    """Run the trunk once over all batches, keeping features and clean outputs. Without labels, the model's
    own clean predictions become the reference. The trunk returns [features, outputs, *extra layers]; extra
    layers are handed to `extra` batch by batch (reduced on the fly, never all kept)."""
    feats, outs = [], []
    for batch in batches:
        f, o, *rest = trunk(batch)
        if not outs and sum(d > 1 for d in np.shape(o)[1:]) > 1:
            raise GenauditError(
                f"The model's output has shape {list(np.shape(o)[1:])} per sample: scores per position (e.g. "
                "segmentation or detection), not one score per class. genaudit audits classifiers; if the model "
                "has a class-score output too, choose it with --output."
            )
        feats.append(np.asarray(f, np.float32))
        outs.append(np.asarray(o, np.float32))
        if extra is not None:
            extra(rest)
        if progress is not None:
            progress(len(batch))
    features = np.concatenate(feats)
    logits = np.concatenate(outs).reshape(len(features), -1)
    return FeatureSet(features, logits, logits.argmax(axis=1), labels)


CLEAN_ACCURACY = Metric(name="clean_accuracy", path="clean_accuracy", label="clean accuracy", group="accuracy",
                        better=Better.HIGHER, short="accuracy on the audited samples",
                        meaning="fraction of the audited (training) samples classified correctly",
                        formula="mean(argmax ψ(F) == y)", source="—",
                        reading="Training accuracy, not test accuracy. Near chance (1/classes) usually means wrong "
                                "preprocessing.", tag="train acc", error="clean_accuracy_standard_error")

