"""The fast neighbour search and pooling give bit-for-bit what the plain definitions give (Performance v2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genaudit.diagnostics.neighbours import (
    DEFAULT_BLOCK,
    _chunk_rows,
    nearest_neighbours,
)
from genaudit.features import flat_pooled


def reference_neighbours(x, k=10, *, max_block=DEFAULT_BLOCK):
    """The implementation before the in-place distances and the candidate selection (kept verbatim)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    k = min(int(k), n - 1)
    sq = np.einsum("ij,ij->i", x, x)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float64)
    rows = _chunk_rows(n, max_block)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        m = stop - start
        d = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
        np.maximum(d, 0.0, out=d)
        d[np.arange(m), np.arange(start, stop)] = np.inf
        kth = np.partition(d, k - 1, axis=1)[:, k - 1]
        less = d < kth[:, None]
        equal = d == kth[:, None]
        room = k - less.sum(axis=1)
        chosen = less | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= room[:, None]))
        cols = np.nonzero(chosen)[1].reshape(m, k)
        dist = np.take_along_axis(d, cols, axis=1)
        order = np.argsort(dist, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(cols, order, axis=1)
        distances[start:stop] = np.take_along_axis(dist, order, axis=1)
    return indices, distances


def same(x, k, **kw):
    got, want = nearest_neighbours(x, k, **kw), reference_neighbours(x, k, **kw)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].tobytes() == want[1].tobytes()  # bit for bit (signs of zero included)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 90), d=st.integers(1, 40), k=st.integers(1, 25), levels=st.sampled_from([0, 2, 3, 1000]),
       dup=st.floats(0, 0.6), seed=st.integers(0, 2**32 - 1), block=st.sampled_from([DEFAULT_BLOCK, 1, 97, 500]))
def test_nearest_neighbours_bit_identical_to_the_definition(n, d, k, levels, dup, seed, block):
    rng = np.random.default_rng(seed)
    # levels > 0: few distinct values, so equal distances (ties at the k-th place) are common; dup: exact copies
    x = rng.integers(0, levels, (n, d)).astype(np.float32) if levels else rng.standard_normal((n, d)).astype(np.float32)
    copies = rng.random(n) < dup
    x[copies] = x[rng.integers(0, n, int(copies.sum()))]
    same(x, k, max_block=block)


@pytest.mark.parametrize("n,d", [(2000, 3072), (2000, 512), (1500, 4096), (700, 784)])
def test_nearest_neighbours_bit_identical_at_audit_sizes(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.random((n, d), dtype=np.float32)
    x[n // 2 : n // 2 + 50] = x[:50]  # duplicates
    same(x, 20)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("n,d,levels,block", [(128, 5, 3, DEFAULT_BLOCK), (257, 31, 0, DEFAULT_BLOCK),
                                              (700, 6, 3, DEFAULT_BLOCK), (1999, 3072, 0, DEFAULT_BLOCK),
                                              (2000, 4096, 0, DEFAULT_BLOCK), (500, 9, 2, 500 * 77)])
def test_nearest_neighbours_on_threads_bit_identical(workers, n, d, levels, block):
    """On several threads (the product in aligned blocks, or the chunks side by side): the same neighbours and
    distances bit for bit, ties and duplicates included."""
    rng = np.random.default_rng(n * d + workers)
    x = rng.integers(0, levels, (n, d)).astype(np.float32) if levels else rng.standard_normal((n, d)).astype(np.float32)
    x[n // 2 : n // 2 + 20] = x[:20]  # duplicates
    got, want = nearest_neighbours(x, 20, max_block=block, workers=workers), reference_neighbours(x, 20, max_block=block)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].tobytes() == want[1].tobytes()


def outcome(f, x, k):
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the distances, as before
            return f(x, k)
    except ValueError:
        return "ValueError"


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [(3, 1), (0, 0)])
def test_nearest_neighbours_non_finite_like_the_definition(bad, where):
    x = np.random.default_rng(0).random((40, 3))
    x[where] = bad
    got, want = outcome(nearest_neighbours, x, 5), outcome(reference_neighbours, x, 5)
    if isinstance(want, str):
        assert got == want
    else:
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_nearest_neighbours_heavy_ties_over_several_row_blocks():
    x = np.random.default_rng(3).integers(0, 3, (700, 6)).astype(np.float32)  # 729 patterns: ties everywhere
    same(x, 20)
    same(x, 20, max_block=700 * 300)  # row chunks that do not align with the 256-row blocks


def test_nearest_neighbours_all_equal_like_the_definition():
    same(np.zeros((30, 4), np.float32), 20)
    same(np.ones((3, 2), np.float32), 5)


def plain_neighbours(x, k):
    """The definition written out plainly: the float64 distances of every pair from one product, clipped at 0,
    and each row's columns sorted by (distance, index), the sample itself left out."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    k = min(k, n - 1)
    sq = np.einsum("ij,ij->i", x, x)
    d = np.maximum((sq[:, None] + sq[None, :]) - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d, np.inf)
    order = np.stack([np.lexsort((np.arange(n), row))[:k] for row in d])
    return order, np.take_along_axis(d, order, axis=1)


def same_as_plain(x, k):
    got, want = nearest_neighbours(x, k), plain_neighbours(x, k)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].tobytes() == want[1].tobytes()


@st.composite
def hard_samples(draw):
    """Inputs where the (distance, index) rule is easy to get wrong: exact ties, distances lost in rounding
    (clipped to 0), huge magnitudes, constant vectors, duplicates, and as few as 2 samples."""
    n, d = draw(st.integers(2, 60)), draw(st.integers(1, 24))
    kind = draw(st.sampled_from(["normal", "levels", "huge", "tiny", "constant"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "normal":
        x = rng.standard_normal((n, d)) * 10.0 ** draw(st.integers(-30, 30))
    elif kind == "levels":  # few distinct values: equal distances at the k-th place are common
        x = rng.integers(0, draw(st.integers(1, 3)), (n, d)).astype(np.float64)
    elif kind == "huge":  # squares near 1e300, and differences far below their rounding
        x = 10.0 ** draw(st.integers(100, 150)) * (1 + rng.integers(-2, 3, (n, d)) * 10.0 ** -draw(st.integers(0, 17)))
    elif kind == "tiny":  # a shared offset with differences at or below its last bits
        x = draw(st.floats(-1e6, 1e6)) + rng.standard_normal((n, d)) * 10.0 ** -draw(st.integers(6, 16))
    else:
        x = np.full((n, d), draw(st.floats(-1e100, 1e100)))
    copies = rng.random(n) < draw(st.floats(0, 0.6))
    x[copies] = x[rng.integers(0, n, int(copies.sum()))]
    if draw(st.booleans()) and np.all(np.abs(x) < 1e30):
        x = x.astype(np.float32)
    return x, draw(st.integers(1, n + 2))  # k above N - 1 is capped


@settings(max_examples=200, deadline=None)
@given(case=hard_samples())
def test_nearest_neighbours_equal_the_plain_definition(case):
    same_as_plain(*case)


@pytest.mark.parametrize("x", [np.array([[0.0], [1.0]]), np.array([[1.0, 2.0], [1.0, 2.0]]),
                               np.array([[5.0], [5.0], [5.0]]), np.array([[0.0], [2.0], [1.0]]),
                               np.array([[1e153], [-1e153], [1e153]])])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_nearest_neighbours_of_two_and_three_samples(x, k):
    same_as_plain(x, k)


def test_nearest_neighbours_of_random_images_equal_the_plain_definition():
    rng = np.random.default_rng(784)
    x = (rng.integers(0, 256, (2000, 784)) / 255).astype(np.float32)
    x[1000:1040] = x[:40]  # duplicates: distance 0 at the front of their rows
    same_as_plain(x, 20)


def reference_pooled(x, max_dims):
    """flat_pooled before the fast block means (kept verbatim)."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x[0].size > max_dims:
        c, h, w = x.shape[1:]
        f = max(2, int(np.sqrt(x[0].size / max_dims)))
        while c * (h // f) * (w // f) > max_dims:
            f += 1
        h2, w2 = h // f, w // f
        x = x[:, :, : h2 * f, : w2 * f].reshape(len(x), c, h2, f, w2, f).mean(axis=(3, 5))
    return x.reshape(len(x), -1)


@pytest.mark.parametrize("shape,max_dims", [
    ((7, 64, 16, 16), 4096),     # ResNet-18's early layer at 32x32: 2x2 blocks
    ((3, 64, 112, 112), 4096),   # ImageNet early layer: 14x14 blocks (numpy's pairwise row sums)
    ((4, 3, 224, 224), 4096),    # ImageNet input: 7x7 blocks, 224 = 32 x 7
    ((5, 3, 33, 31), 300),       # rows and columns dropped
    ((2, 8, 20, 3), 16),         # one block column: numpy sums each block as one run
    ((2, 2, 5, 40), 8),          # one block row
    ((3, 1, 40, 40), 16),        # 10x10 blocks
    ((1, 4, 9, 9), 4),
])
def test_flat_pooled_bit_identical_to_numpy_mean(shape, max_dims):
    rng = np.random.default_rng(sum(shape))
    for scale in (1.0, 1e-39, 1e30):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        x[0, 0, :3, :3] = -0.0
        assert flat_pooled(x, max_dims).tobytes() == reference_pooled(x, max_dims).tobytes()
    x[0, 0, 0, 0] = np.nan
    x[-1, -1, -1, -1] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        assert flat_pooled(x, max_dims).tobytes() == reference_pooled(x, max_dims).tobytes()


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 6), h=st.integers(1, 40), w=st.integers(1, 40),
       max_dims=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_flat_pooled_bit_identical_on_random_geometries(n, c, h, w, max_dims, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    assert flat_pooled(x, max_dims).tobytes() == reference_pooled(x, max_dims).tobytes()


def test_rows_index_like_their_concatenation():
    from genaudit.features import Rows

    rng = np.random.default_rng(0)
    parts = [rng.random((n, 5), dtype=np.float32) for n in (3, 7, 1, 9)]
    rows, whole = Rows(parts), np.concatenate(parts)
    assert len(rows) == 20 and rows.shape == (20, 5) and rows.dtype == np.float32
    for index in (np.arange(20), rng.permutation(20)[:7], np.array([19, 0, 0, 5]), np.array([], int),
                  np.array([-1, 3]), whole[:, 0] > 0.5, slice(2, 15, 3)):
        np.testing.assert_array_equal(rows[index], whole[index])
    taken = rows.take(rng.permutation(20), np.float64)
    assert taken.dtype == np.float64
    np.testing.assert_array_equal(np.sort(taken, axis=0), np.sort(whole.astype(np.float64), axis=0))
    np.testing.assert_array_equal(np.asarray(rows), whole)
    with pytest.raises(IndexError):
        rows[np.array([20])]


def test_rows_kept_for_some_positions_are_taken_by_position():
    from genaudit.features import Rows

    whole = np.arange(40, dtype=np.float32).reshape(20, 2)
    keep = np.array([1, 4, 5, 11, 19])
    rows = Rows([whole[[1, 4]], whole[[5]], whole[[11, 19]]], keep)
    np.testing.assert_array_equal(rows.take(np.array([19, 1, 5])), whole[[19, 1, 5]])
    np.testing.assert_array_equal(rows.take(keep, np.float64), whole[keep].astype(np.float64))
    for missing in ([2], [20], [0, 1]):
        with pytest.raises(IndexError, match="did not keep"):
            rows.take(np.array(missing))
