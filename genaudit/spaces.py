"""The neighbour votes' sample spaces, collected while the trunk pass runs.

The votes compare audited samples in spaces other than the feature layer: the preprocessed inputs ("input")
and the model's first activation ("early"). They run among the voters only (`voter_positions`: at most
`VOTERS` samples, chosen from the data alone), so the trunk pass need not keep every sample's vectors: it hands
each batch of a space to a `SpaceCollector`, which keeps the voters' rows of it as bounded flat vectors
(`flat_space`), and gets the spaces back as `Rows` indexed by audited position.

This module knows nothing of the diagnostics: `genaudit.diagnostics.neighbours` imports it, not the other way
round.
"""

from __future__ import annotations

import numpy as np

from genaudit.data import stratified_indices
from genaudit.features import Rows, flat_pooled

VOTERS = 2000  # audited samples that vote: the estimate was fitted on votes among 2,000 (more changes their
#                meaning, and the cost grows as N²); a larger audit votes on a seeded subsample (voter_positions)

MAX_DIMS = 4096  # larger samples (big images, early conv maps) are average-pooled to at most this many values


def voter_positions(n: int, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """The audited samples (positions) the neighbour votes run on: all of them up to VOTERS, else a seeded
    subsample of VOTERS, stratified by the labels when the audit uses them (uniform without). It depends on the
    data only, not on the model's outputs, so the trunk pass knows it before it runs and keeps only these rows
    of the input and early-layer spaces."""
    return np.arange(n) if n <= VOTERS else stratified_indices(n, labels, VOTERS, seed)


def flat_space(x: np.ndarray) -> np.ndarray:
    """A space's samples as bounded float vectors (see genaudit.features.flat_pooled)."""
    return flat_pooled(x, MAX_DIMS)


class SpaceCollector:
    """The rows at `keep` (ascending audited positions) of every space it is fed, batch by batch, as
    `flat_space` vectors: `take(space, batch)` with each space's batches in audited order (the spaces are
    counted apart, so the input and early batches may differ in size), `rows(space)` or `spaces()` at the end.
    Only the kept rows are pooled and kept; the rest of a batch is dropped."""

    def __init__(self, keep: np.ndarray) -> None:
        self.keep = np.asarray(keep)
        self._parts: dict[str, list[np.ndarray]] = {}
        self._seen: dict[str, int] = {}  # samples of each space fed so far: the next batch's first position

    @classmethod
    def of_voters(cls, n: int, labels: np.ndarray | None, seed: int, every: bool = False) -> SpaceCollector:
        """The collector of an audit of `n` samples: the voters' rows (`voter_positions`), or every sample's
        (`every`, e.g. for a per-sample table)."""
        return cls(np.arange(n) if every else voter_positions(n, labels, seed))

    def take(self, space: str, batch: np.ndarray) -> None:
        """Keep the rows of `batch` (the next samples of `space`, N x ...) that are at kept positions."""
        lo = self._seen.get(space, 0)
        self._seen[space] = lo + len(batch)
        parts = self._parts.setdefault(space, [])
        at = self.keep[np.searchsorted(self.keep, lo) : np.searchsorted(self.keep, lo + len(batch))] - lo
        if len(at):  # a batch without a kept row adds nothing (and an empty batch cannot be pooled)
            # rows that follow each other (every row, up to the voters' count) are pooled from a view of the
            # batch, not a copy of it; what is kept never shares the batch's memory
            rows = batch[at[0] : at[-1] + 1] if at[-1] - at[0] == len(at) - 1 else batch[at]
            kept = flat_space(rows)
            parts.append(kept.copy() if np.may_share_memory(kept, batch) else kept)

    def rows(self, space: str) -> Rows:
        """The kept rows of `space`, in the batches they were kept in, indexed by audited position."""
        return Rows(self._parts.get(space, []), self.keep)

    def spaces(self) -> dict[str, Rows]:
        """Every space fed, by name."""
        return {space: self.rows(space) for space in self._parts}


__all__ = ["MAX_DIMS", "VOTERS", "SpaceCollector", "flat_space", "voter_positions"]
