"""The space collector the trunk pass feeds: the rows it keeps batch by batch are those chosen from the whole."""

from __future__ import annotations

import numpy as np
import pytest

from genaudit import spaces
from genaudit.spaces import SpaceCollector, flat_space


def _split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    assert sum(sizes) == len(x)
    return np.split(x, np.cumsum(sizes)[:-1])


@pytest.mark.parametrize("shape", [(5,), (8, 28, 28), (3, 9, 7)])  # vectors; maps pooled above MAX_DIMS; small maps
def test_rows_kept_across_uneven_batches_are_the_rows_chosen_from_the_whole(shape):
    rng = np.random.default_rng(0)
    n = 60
    early = rng.standard_normal((n, *shape)).astype(np.float32)
    inputs = rng.standard_normal((n, 2, 6, 6)).astype(np.float32)
    keep = np.sort(rng.choice(n, 17, replace=False))
    keep = keep[(keep < 20) | (keep >= 23)]  # positions 20..22 kept by no one: a batch without a kept row
    collector = SpaceCollector(keep)
    # the spaces come in different, uneven batches, interleaved as the trunk pass feeds them
    for x, e in zip(_split(inputs, [1, 12, 7, 3, 30, 7]), _split(early, [13, 7, 3, 1, 29, 7])):
        collector.take("input", x)
        collector.take("early", e)
    found = collector.spaces()
    assert sorted(found) == ["early", "input"]
    for name, whole in (("input", inputs), ("early", early)):
        rows = found[name]
        assert len(rows) == len(keep) and np.array_equal(rows.positions, keep)
        want = flat_space(whole[keep])
        assert rows.take(keep).tobytes() == want.tobytes()  # bit for bit, pooled or not
        assert np.asarray(rows).tobytes() == want.tobytes()
        assert rows.take(keep).tobytes() == flat_space(whole)[keep].tobytes()  # pooling is per sample
        np.testing.assert_array_equal(rows.take(keep[::-1], np.float64), want[::-1].astype(np.float64))
        with pytest.raises(IndexError, match="did not keep"):
            rows.take(np.array([21]))
    assert found["early"].shape[1] <= spaces.MAX_DIMS


def test_every_keeps_all_rows():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 1, 70, 70)).astype(np.float32)  # 4,900 values: pooled
    collector = SpaceCollector.of_voters(len(x), rng.integers(0, 3, 40), 0, every=True)
    assert np.array_equal(collector.keep, np.arange(40))
    for part in _split(x, [9, 1, 30]):
        collector.take("input", part)
    rows = collector.rows("input")
    assert len(rows) == 40
    assert np.asarray(rows).tobytes() == flat_space(x).tobytes()


def test_the_voters_are_kept_unless_every(monkeypatch):
    labels = np.repeat(np.arange(4), 25)
    assert np.array_equal(SpaceCollector.of_voters(100, labels, 0).keep, np.arange(100))  # up to VOTERS: all
    monkeypatch.setattr(spaces, "VOTERS", 20)
    keep = SpaceCollector.of_voters(100, labels, 3).keep
    assert np.array_equal(keep, spaces.voter_positions(100, labels, 3))
    assert len(keep) == 20 and np.all(np.diff(keep) > 0) and np.array_equal(np.bincount(labels[keep]), [5] * 4)
    assert len(SpaceCollector.of_voters(100, labels, 3, every=True).keep) == 100


def test_a_space_never_fed_has_no_rows():
    collector = SpaceCollector(np.arange(5))
    collector.take("input", np.zeros((5, 3), np.float32))
    assert list(collector.spaces()) == ["input"]
    assert len(collector.rows("early")) == 0


@pytest.mark.parametrize("shape", [(2, 6, 6), (8, 28, 28)])  # kept as they are; pooled above MAX_DIMS
@pytest.mark.parametrize("keep", [np.arange(30), np.arange(4, 19), np.array([0, 3, 4, 5, 29])])
def test_kept_rows_are_the_batches_rows_and_never_share_their_memory(shape, keep):
    """Every row, a run of rows (taken through a view of the batch) or scattered rows: the same vectors, and a
    batch changed after it was fed changes nothing kept."""
    x = np.random.default_rng(2).standard_normal((30, *shape)).astype(np.float32)
    batches = [part.copy() for part in _split(x, [10, 20])]
    collector = SpaceCollector(keep)
    for part in batches:
        collector.take("input", part)
        part[:] = np.nan  # the caller reuses its buffer
    assert np.asarray(collector.rows("input")).tobytes() == flat_space(x[keep]).tobytes()
