"""Class-conditional grouping shared by the diagnostics: which classes are present, per-class sums, entropies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Classes:
    """The J classes present in `classes` (sorted), each sample's class position 0..J-1 and per-class counts."""

    labels: np.ndarray
    index: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, classes: np.ndarray) -> Classes:
        labels, index, counts = np.unique(np.asarray(classes), return_inverse=True, return_counts=True)
        return cls(labels, index.reshape(-1), counts)

    @property
    def n(self) -> int:
        return len(self.labels)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-class column sums of `values` (N x D) as float64 (J x D), in the order of `labels`: each class's
        rows added in sample order, every value taken to float64 as it is added (no float64 copy of `values`)."""
        order = np.argsort(self.index, kind="stable")
        starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        return np.add.reduceat(np.asarray(values)[order], starts, axis=0, dtype=np.float64)

    def means(self, values: np.ndarray) -> np.ndarray:
        """Class-conditional means (J x D)."""
        return self.sums(values) / self.counts[:, None]

    def squared_residuals(self, values: np.ndarray, means: np.ndarray) -> np.ndarray:
        """(values - means[class of each sample]) ** 2 (N x D, float64 `values`, `means` from `means`), formed in
        one new array: the same operations as the plain expression, without its temporaries."""
        residual = means[self.index]
        np.subtract(values, residual, out=residual)
        return np.square(residual, out=residual)


def entropy(counts: np.ndarray, axis: int = 0) -> np.ndarray:
    """Entropy in nats of the distribution given by non-negative `counts` along `axis` (0 ln 0 = 0)."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum(axis=axis, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=axis)
