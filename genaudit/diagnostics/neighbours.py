"""Neighbour-vote agreement: a pseudo held-out reference built from the training data itself.

For every audited sample n, the k nearest *other* audited samples (leave-one-out; Euclidean distance in a
space `x`, e.g. the raw preprocessed inputs or a layer's features) vote with their `reference` labels (the given
training labels, or the model's own predictions when there are none). The vote is a k-NN classifier that never
saw sample n, so it is an out-of-sample guess of n's class. The measure is the fraction of samples whose
`predictions` (the model's clean predictions) equal the vote.

Why it predicts held-out accuracy: a model that memorized wrong training labels contradicts its neighbours' vote
on exactly those samples, and a model that underfits disagrees with it too; a model that learned the structure the
neighbours share agrees with it. It is a reference as good as k-NN is in that space: strong on MNIST-like pixels,
weak where pixel distance means little (natural images), which is why a space of patch features built from the
audited images alone (`genaudit.patches`) and the model's own feature space are offered as well.

Definition (exact, deterministic):

- distance: squared Euclidean ||a||^2 + ||b||^2 - 2 a.b in float64 (clipped at 0) on x flattened to N x D;
- neighbours of n: the k samples m != n with the smallest distance; equal distances are broken by the smaller
  sample index (so exact duplicates of n are neighbours, n itself never is); k is capped at N - 1;
- vote: the class with the most neighbours; a tie between classes goes to the tied class whose nearest
  neighbour is closest, and if that is also equal, to the smallest class index;
- value = mean_n [predictions_n == vote_n].

The vote at the training set's size (input and patch spaces; `vote_curve`, `carried_agreement`, `extrapolate`): the vote
is also run among seeded stratified subsamples of n/8, n/4 and n/2 of its n voters, and each agreement is carried
to the N images the model trained on by a power law on its disagreement, a(N) = 1 - (1 - a_n) (N/n)^b, b fitted
in log-log over the curve and clipped to [-1, 0], N at most 100 n. A vote among 2,000 images is a k-NN classifier
of 2,000 images, which a model trained on 60,000 is bound to beat; carried to 60,000 the model's agreement is
within 0.007 of held-out accuracy on the full-data MNIST runs of genaudit's validity study. Carried whole, it
takes an underfit model's own errors for the vote's (0.04-0.05 too high on two underfit MNIST CNNs trained
elsewhere); carried part by part (`carried_agreement`: on the samples the model predicts as labelled, the vote's
agreement with that label; on the others, the vote's agreement with the model's prediction; each on its own curve,
weighed by its share) it is within 0.011-0.014 on those two and within 0.004 on the clean full-data MNIST runs.

Rows are processed in chunks of about `max_block` distance entries (4 million by default: 32 MB of float64
distances, formed in place from the one matrix product, plus temporaries of 512 KB), so memory is O(chunk x N),
never N x N; N = 10,000 runs in chunks of 400 rows. The neighbours of a row are found among the candidates at
most its k-th smallest distance (a partition), sorted by (distance, index): the rule above, exactly.

With `workers` > 1 the search runs on that many threads: the chunks side by side (memory O(workers x chunk x N)),
or, when all N rows fit one chunk (N <= 2,000 by default), the one symmetric product in blocks of rows whose edges
are multiples of `ALIGN`, each block pair once, and then the rows' selections. BLAS computes each product as it does
in the whole matrix product (the same kernels on the same tiles), so the neighbours and distances are the same bit
for bit (tests/test_perf_neighbours.py checks it against the one product).
"""

from __future__ import annotations

import numpy as np

from genaudit.data import stratified_indices
from genaudit.features import Rows, share_error
from genaudit import derived
from genaudit.patches import SPACE as PATCHES_SPACE
from genaudit.patches import patch_space, pooled, pooling
from genaudit.registry import Better, Context, Diagnostic, Metric
from genaudit.spaces import VOTERS, flat_space, voter_positions  # noqa: F401 (VOTERS: re-exported)
from genaudit.threads import blas_callers, each, workers

DEFAULT_BLOCK = 4_000_000  # float64 distance entries per chunk (32 MB)


def _chunk_rows(n: int, max_block: int) -> int:
    return int(max(1, min(n, max_block // max(n, 1))))


def nearest_neighbours(x: np.ndarray, k: int = 10, *, max_block: int = DEFAULT_BLOCK,
                       workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The k leave-one-out nearest neighbours of each of the N samples of `x` (N x ...): (indices N x k, squared
    distances N x k), each row ordered by (distance, index) as defined in the module docstring. k is capped at
    N - 1. The neighbours depend on `x` only, so they can be computed once and voted with several references.
    `workers`: threads to search on (the same result on any number)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 2:
        raise ValueError("the neighbour vote needs at least 2 samples")
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k})")
    k = min(int(k), n - 1)
    sq = np.einsum("ij,ij->i", x, x)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float64)
    rows, sub = _chunk_rows(n, max_block), _sub_rows(n)

    def select(d: np.ndarray, start: int, stop: int) -> None:  # d: the products of rows start..stop-1
        for s in range(start, stop, sub):  # each sub-block from products to neighbours while it is in cache
            e = min(stop, s + sub)
            block = d[s - start : e - start]
            _distances_in_place(block, sq[s:e], sq, s)
            _select(block, k, indices[s:e], distances[s:e])

    if workers > 1 and rows >= n >= 2 * ALIGN:  # one chunk: its symmetric product in blocks, then the selections
        d = _gram(x, workers)
        each(lambda s: select(d[s:], s, min(n, s + sub)), range(0, n, sub), workers, "genaudit-rows")
    else:  # the one BLAS call of each chunk; the distances are computed from it in place
        each(lambda start: select(x[start : min(n, start + rows)] @ x.T, start, min(n, start + rows)),
             range(0, n, rows), workers, "genaudit-rows")
    return indices, distances


ALIGN = 64  # the blocks of `_gram` start at multiples of this many rows: every BLAS kernel's tiles fall in place


def _gram(x: np.ndarray, workers: int) -> np.ndarray:
    """x @ x.T (N x N) on `workers` threads, bit for bit: x's rows in 2 x `workers` blocks with edges at multiples
    of ALIGN, each pair of blocks multiplied once (the diagonal ones symmetric, as the whole product is) and the
    other triangle filled by transposing, the largest products first."""
    n = len(x)
    edges = sorted({0, n, *(min(n, round(n * i / (2 * workers) / ALIGN) * ALIGN) for i in range(1, 2 * workers))})
    blocks = [slice(a, b) for a, b in zip(edges, edges[1:])]
    pairs = sorted(((a, b) for i, a in enumerate(blocks) for b in blocks[i:]),
                   key=lambda p: -(p[0].stop - p[0].start) * (p[1].stop - p[1].start) * (1 + (p[0] != p[1])))
    d = np.empty((n, n))

    def product(pair: tuple[slice, slice]) -> None:
        a, b = pair
        d[a, b] = x[a] @ x[b].T
        if a != b:
            d[b, a] = d[a, b].T

    each(product, pairs, workers, "genaudit-gram")
    return d


_SUB_ENTRIES = 1 << 16  # distances per sub-block (512 KB of float64: the steps after the product run in cache)


def _sub_rows(n: int) -> int:
    """Rows per sub-block of a chunk (at least 8, so that per-call overheads stay small at large N)."""
    return max(8, _SUB_ENTRIES // n)


def _distances_in_place(d: np.ndarray, sq_rows: np.ndarray, sq: np.ndarray, first: int) -> None:
    """d (the products a.b of rows first, first + 1, ... with every row) becomes the clipped distances
    max(0, ||a||^2 + ||b||^2 - 2 a.b), with inf at each row's own column (leave one out): the same float64
    operations in the same order as `np.maximum((sq_rows[:, None] + sq[None, :]) - 2.0 * d, 0.0)` (d * -2 is
    exact, and t - 2p == t + (-2p) in IEEE arithmetic), without the full-size temporaries."""
    d *= -2.0
    d += sq_rows[:, None] + sq[None, :]
    np.maximum(d, 0.0, out=d)
    d[np.arange(len(d)), np.arange(first, first + len(d))] = np.inf


def _select(d: np.ndarray, k: int, indices: np.ndarray, distances: np.ndarray) -> None:
    """The k smallest entries of each row of d in (distance, column) order, into indices and distances (m x k).

    The k-th smallest distance `kth` of a row is found with a partition; every entry chosen has d <= kth, and
    the candidates d <= kth (k of them, more only on ties at kth) sorted by (distance, column) give the row's k
    nearest: those below kth, then the lowest columns at exactly kth, as the definition says. NaN distances
    (non-finite inputs) compare false and are never candidates; a row left with fewer than k candidates falls
    back to the full-row rule (which then raises as before)."""
    m, n = d.shape
    kth = np.partition(d, k - 1, axis=1)[:, k - 1]
    flat = np.flatnonzero(d <= kth[:, None])  # row by row, columns ascending
    r, c = np.divmod(flat, n)
    counts = np.bincount(r, minlength=m)
    if np.any(counts < k):
        _select_full(d, k, kth, indices, distances)
        return
    v = d.reshape(-1)[flat]
    order = np.lexsort((v, r))  # by row, then distance; stable, so equal distances keep column order
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))  # each row's first candidate in that order
    take = order[(first[:, None] + np.arange(k)[None, :]).ravel()]
    indices[:] = c[take].reshape(m, k)
    distances[:] = v[take].reshape(m, k)


def _select_full(d: np.ndarray, k: int, kth: np.ndarray, indices: np.ndarray, distances: np.ndarray) -> None:
    """The definition applied to whole rows (the rule `_select` shortcuts)."""
    m = len(d)
    less = d < kth[:, None]
    equal = d == kth[:, None]
    room = k - less.sum(axis=1)  # how many of the samples at exactly the k-th distance still fit
    chosen = less | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= room[:, None]))  # lower index first
    cols = np.nonzero(chosen)[1].reshape(m, k)  # exactly k per row, in index order
    dist = np.take_along_axis(d, cols, axis=1)
    order = np.argsort(dist, axis=1, kind="stable")  # by distance; equal distances keep index order
    indices[:] = np.take_along_axis(cols, order, axis=1)
    distances[:] = np.take_along_axis(dist, order, axis=1)


def vote_of(indices: np.ndarray, distances: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The majority vote of `reference` over precomputed neighbours (from `nearest_neighbours`): ties between
    classes go to the tied class whose nearest neighbour is closest, then to the smallest class index."""
    reference = np.asarray(reference).reshape(-1)
    if len(reference) != len(indices):
        raise ValueError(f"the neighbours are of {len(indices)} samples but reference has {len(reference)}")
    classes, ref_idx = np.unique(reference, return_inverse=True)
    labels = ref_idx[indices]  # N x k class positions of the neighbours
    c = len(classes)
    counts = np.zeros((len(indices), c), np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(indices)), labels.shape[1]), labels.ravel()), 1)
    best = counts.max(axis=1, keepdims=True)
    tied = counts == best
    winner = counts.argmax(axis=1)
    ambiguous = np.flatnonzero(tied.sum(axis=1) > 1)
    if len(ambiguous):
        sub_l, sub_d = labels[ambiguous], distances[ambiguous]
        nearest = np.stack([np.where(sub_l == j, sub_d, np.inf).min(axis=1) for j in range(c)], axis=1)
        nearest[~tied[ambiguous]] = np.inf
        winner[ambiguous] = nearest.argmin(axis=1)  # argmin: smallest class index among equal distances
    return classes[winner]


def neighbour_vote(x: np.ndarray, reference: np.ndarray, k: int = 10, *, max_block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Leave-one-out k-NN majority vote of `reference` for each of the N samples of `x` (N x ...), as defined in
    the module docstring. Returns an array of N classes (values taken from `reference`)."""
    reference = np.asarray(reference).reshape(-1)
    if len(reference) != len(x):
        raise ValueError(f"x has {len(x)} samples but reference has {len(reference)}")
    return vote_of(*nearest_neighbours(x, k, max_block=max_block), reference)


def neighbour_agreement(x: np.ndarray | None, reference: np.ndarray, predictions: np.ndarray, k: int = 10, *,
                        space: str = "input", max_block: int = DEFAULT_BLOCK,
                        neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Fraction of samples whose `predictions` equal the leave-one-out k-NN vote of `reference` in `x`.

    x: N x ... (flattened to N x D); reference: N labels (given labels, or the model's predictions when the
    data has no labels: then the measure is label-free self-consistency); predictions: N predicted classes.

    Returns
      value: mean [predictions == vote] (the vote of the k nearest);
      reference_agreement: mean [reference == vote], model-free: how often a sample's own label agrees with its
        neighbours (1 - it is the share of samples their neighbours outvote; low with noisy labels);
      vote_consistency: model-free reliability of the vote itself: the fraction of samples on which two
        *disjoint* votes agree, that of the neighbours at odd ranks 1, 3, ..., 2k-1 and that of the neighbours
        at even ranks 2, 4, ..., 2k (each k neighbours, same tie rules). If the two votes erred independently
        with accuracy v over C classes, consistency = v^2 + (1 - v)^2 / (C - 1): near 1 for a trustworthy
        reference, near 1/C when the neighbours' labels are no better than chance (heavy label noise, or a
        space where distance means little). Needs 2k neighbours (capped at N - 1: with fewer, the two halves
        are the odd and even ranks of what there is; None when N < 3);
      k (as used, <= N - 1), space (echoed), samples.

    `neighbours`: (indices, distances) from `nearest_neighbours(x, K)`, to vote several references (or several
    k: the first k columns of a row ordered by (distance, index) are exactly its k nearest) without recomputing
    distances; `x` is then not used (may be None). K >= 2k gives vote_consistency at k, else at K // 2.
    """
    predictions = np.asarray(predictions).reshape(-1)
    reference = np.asarray(reference).reshape(-1)
    if len(predictions) != len(reference):
        raise ValueError(f"predictions has {len(predictions)} samples but reference has {len(reference)}")
    if neighbours is None:
        neighbours = nearest_neighbours(x, 2 * k, max_block=max_block)
    indices, distances = neighbours
    if len(indices) != len(reference):
        raise ValueError(f"the neighbours are of {len(indices)} samples but reference has {len(reference)}")
    if k > indices.shape[1] and indices.shape[1] < len(indices) - 1:
        raise ValueError(f"k = {k} but only {indices.shape[1]} neighbours were given")
    k_used = min(int(k), indices.shape[1])
    vote = vote_of(indices[:, :k_used], distances[:, :k_used], reference)
    half = min(k_used, indices.shape[1] // 2)
    consistency = None
    if half >= 1:
        odd = vote_of(indices[:, 0 : 2 * half : 2], distances[:, 0 : 2 * half : 2], reference)
        even = vote_of(indices[:, 1 : 2 * half : 2], distances[:, 1 : 2 * half : 2], reference)
        consistency = float(np.mean(odd == even))
    return {
        "value": float(np.mean(predictions == vote)),
        "k": k_used,
        "space": space,
        "samples": int(len(vote)),
        "reference_agreement": float(np.mean(reference == vote)),
        "vote_consistency": consistency,
    }


CURVE_FRACTIONS = (8, 4, 2)  # the vote is also run among n/8, n/4 and n/2 of its n voters
MAX_EXTRAPOLATION = 100  # a training set is read as at most 100 times the voters (30x is validated: 2,000 -> 60,000)


def agreement_parts(vote: np.ndarray, reference: np.ndarray, predictions: np.ndarray) -> dict:
    """A vote's agreements: `value` (with the predictions), `reference_agreement` (with the reference), and the
    value split by whether the model predicts a sample's reference: `fitted` (the share it does),
    `fitted_agreement` (of those, the share whose vote is the reference too) and `unfitted_agreement` (of the
    others, the share whose vote is the model's prediction; None when there are none).
    value = fitted * fitted_agreement + (1 - fitted) * unfitted_agreement."""
    fits = predictions == reference
    return {"value": float(np.mean(predictions == vote)), "reference_agreement": float(np.mean(reference == vote)),
            "fitted": float(np.mean(fits)), "fitted_agreement": float(np.mean(vote[fits] == reference[fits]))
            if fits.any() else None,
            "unfitted_agreement": float(np.mean(vote[~fits] == predictions[~fits])) if not fits.all() else None}


def curve_neighbours(x: np.ndarray, k: int = 10, *, seed: int = 0, strata: np.ndarray | None = None,
                     max_block: int = DEFAULT_BLOCK,
                     workers: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The searches of the learning curve: (positions, each one's k nearest neighbours among them: indices and
    distances) for seeded subsamples of n/8, n/4 and n/2 of the n samples of `x` (stratified by `strata` when
    given; a subsample of at most 2k samples is skipped), smallest first. Neither a model nor the reference enters
    them."""
    n = len(x)
    out = []
    for fraction in CURVE_FRACTIONS:
        m = n // fraction
        if m > 2 * k:
            pos = stratified_indices(n, strata, m, seed)
            out.append((pos, *nearest_neighbours(x[pos], k, max_block=max_block, workers=workers)))
    return out


def vote_curve(x: np.ndarray | None, reference: np.ndarray, predictions: np.ndarray, k: int = 10, *, seed: int = 0,
               strata: np.ndarray | None = None, max_block: int = DEFAULT_BLOCK,
               searches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> list[dict]:
    """The vote's learning curve: the `agreement_parts` of the vote of `reference` among each subsample of
    `curve_neighbours` (given as `searches` when already made for this x, k, seed and strata; x is then not read).
    Returns one {"voters", **agreement_parts} per size, smallest first."""
    reference, predictions = np.asarray(reference).reshape(-1), np.asarray(predictions).reshape(-1)
    if searches is None:
        searches = curve_neighbours(x, k, seed=seed, strata=strata, max_block=max_block)
    return [{"voters": len(pos), **agreement_parts(vote_of(idx, dist, reference[pos]), reference[pos],
                                                   predictions[pos])} for pos, idx, dist in searches]


def extrapolate(points: list[tuple[int, float]], size: int) -> tuple[float, float]:
    """An agreement carried from the largest of `points` (voters m, agreement a) to `size` voters: the
    disagreement 1 - a is a power law c * m^b (least squares in log-log, disagreements floored at 0.001, b clipped
    to [-1, 0]: more voters never make the vote worse, nor better faster than 1/m), so
    a(size) = 1 - (1 - a_n) * (size / n)^b with size capped at MAX_EXTRAPOLATION * n. Returns (a(size), b);
    a size at or below n returns a_n (no extrapolation)."""
    points = sorted(points)
    n, a_n = points[-1]
    if size <= n or len(points) < 2:
        return float(a_n), 0.0
    m = np.log([p[0] for p in points])
    e = np.log(np.maximum([1.0 - p[1] for p in points], 1e-3))
    b = float(np.clip(np.polyfit(m, e, 1)[0], -1.0, 0.0))
    ratio = min(size / n, MAX_EXTRAPOLATION)
    return float(1.0 - (1.0 - a_n) * ratio**b), b


def carried_agreement(curve: list[dict], size: int) -> tuple[float, float, float]:
    """The model's agreement with the vote carried to `size` voters, part by part (points of `agreement_parts`
    with their `voters`, the largest being the measured vote): on the share t of samples the model predicts as
    labelled, the vote agrees with that label more as voters grow; on the others it agrees with the model's
    prediction more only where the prediction is right and the label wrong (an underfit model's own errors do not
    shrink with more voters: carried whole, they made such a model look 0.04-0.05 better than it is). Returns
    (t f(size) + (1 - t) u(size), the exponent of f, the exponent of u), f and u carried by `extrapolate`."""
    curve = sorted(curve, key=lambda p: p["voters"])
    t = curve[-1]["fitted"]
    if size <= curve[-1]["voters"]:
        return curve[-1]["value"], 0.0, 0.0
    parts = []
    for key in ("fitted_agreement", "unfitted_agreement"):
        points = [(p["voters"], p[key]) for p in curve if p[key] is not None]
        parts.append(extrapolate(points, size) if points else (0.0, 0.0))
    (f, f_exponent), (u, u_exponent) = parts
    return t * f + (1.0 - t) * u, f_exponent, u_exponent


def carried(curve: list[dict], size: int) -> dict:
    """Every agreement of a curve (points of `agreement_parts` with their `voters`, the largest being the measured
    vote) carried to `size` voters: `value` (the model's, whole) and `reference_agreement` by `extrapolate`, with
    their exponents, and `value_by_part` by `carried_agreement`, with its two."""
    out = {}
    for key in ("value", "reference_agreement"):
        out[key], out[f"{key}_exponent"] = extrapolate([(p["voters"], p[key]) for p in curve], size)
    out["value_by_part"], out["fitted_exponent"], out["unfitted_exponent"] = carried_agreement(curve, size)
    return out


def vote_at_size(x: np.ndarray | None, reference: np.ndarray, predictions: np.ndarray, vote: np.ndarray, size: int,
                 k: int = 10, *, seed: int = 0, strata: np.ndarray | None = None,
                 searches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> dict:
    """The vote of the n samples of `x` carried to `size` voters: its learning curve (`vote_curve`, from `searches`
    when given: x is then not read and may be None) and the measured `vote` among all n (the k-neighbour vote of
    `reference`), carried by `carried`. Returns {"curve", **carried}."""
    curve = vote_curve(x, reference, predictions, k, seed=seed, strata=strata, searches=searches)
    measured = {"voters": len(reference), **agreement_parts(vote, reference, predictions)}
    return {"curve": curve, **carried([*curve, measured], size)}


__all__ = ["agreement_parts", "carried", "carried_agreement", "curve_neighbours", "extrapolate", "nearest_neighbours",
           "neighbour_agreement", "neighbour_vote", "vote_at_size", "vote_curve", "vote_of"]


# ----------------------------------------------------------------------------------------------- registration

K = 10  # neighbours that vote (genaudit's validity study: docs/validity.md)
CARRIED = ("input", "patches")  # the spaces whose vote is also carried to the training set's size
LABELLED_ONLY = ("patches",)  # votes run only with labels: they feed the estimate (none without labels) and the
#                               patch space is the costliest to build (genaudit.patches)


def voters(c: Context, every: bool = False) -> np.ndarray:
    """The voters of this audit (see `voter_positions`; `every`: all samples, e.g. for a per-sample table)."""
    n = len(c.fs.predictions)
    if every:
        return np.arange(n)
    return c.shared("voters", lambda: voter_positions(n, c.fs.labels, c.opts.seed))


def neighbours_in(c: Context, space: str, every: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """The 2K nearest neighbours of every voter (see `voters`) among the voters, in `space` ("input", "patches",
    "early", "features"), as positions among the voters; computed once per audit and shared by every diagnostic
    that votes with them; None when the space is absent."""
    chosen = voters(c, every)

    def find() -> tuple[np.ndarray, np.ndarray] | None:
        x = voter_rows(c, space, chosen)
        if x is None or len(chosen) < 2:
            return None
        return nearest_neighbours(x, 2 * K, workers=blas_callers(c.opts.threads))

    return c.shared(("neighbours", space, len(chosen)),
                    lambda: of_data(c, space, chosen, ("neighbours",), find, single=True))


def label_agreement(c: Context, space: str, every: bool = False) -> float | None:
    """How often the voters' reference labels agree with their neighbours' vote in `space` (the vote's
    `reference_agreement`), from the searches `neighbours_in` made (or makes); None when the space is absent."""
    found = neighbours_in(c, space, every)
    if found is None:
        return None
    chosen = voters(c, every)
    return neighbour_agreement(None, c.fs.reference[chosen], c.fs.predictions[chosen], K, space=space,
                               neighbours=found)["reference_agreement"]


DATA_ONLY = ("input", "patches")  # spaces whose vectors come from the samples alone: the same for every model
KEPT = "n2"  # in the on-disk entries' digests: bumped whenever a kept search changes
KEEP = 64  # entries kept on disk (under 1 MB each for 2,000 voters), the least recently used dropped first


def of_data(c: Context, space: str, chosen: np.ndarray, key: tuple, make, single: bool = False):
    """`make()`'s neighbour searches among the voters at `chosen` in `space`, kept when `space` is one of DATA_ONLY
    (its vectors come from the samples alone; `key` holds whatever else the searches depend on, arrays by their
    bytes): on the audit's Dataset for every later audit of the same Dataset object in this process (`compare`'s
    checkpoints), and on disk (`genaudit.derived`) for any audit of the same raw samples and preprocessing. Made
    afresh otherwise. `make()` gives a list of groups of arrays (the curve: positions, indices, distances per
    size), or with `single` one group (indices and distances), or None."""
    if space not in DATA_ONLY or c.dataset is None:
        return make()
    parts = tuple(p.tobytes() if isinstance(p, np.ndarray) else p for p in (chosen, *key))
    return c.dataset.derived_from((space, c.opts.seed, *parts), lambda: _kept(c, space, chosen, parts, make, single))


def _kept(c: Context, space: str, chosen: np.ndarray, parts: tuple, make, single: bool):
    """`make()`'s groups, read from disk when an audit of the same raw samples, preprocessing, space, seed and key
    left them there, else made and stored."""
    raw = np.ascontiguousarray(c.dataset.x[chosen])
    name = derived.digest(KEPT, PATCHES_SPACE if space == "patches" else None, space, c.opts.seed, K,
                          repr(c.dataset.preprocess), raw.dtype.str, raw.shape, raw.tobytes(), *parts)
    path = derived.folder("neighbours") / f"{name}.npz"
    found = derived.load(path, lambda arrays: _are_groups(arrays, len(chosen)))
    if found is not None:
        groups = _groups(found)
        return groups[0] if single else groups
    value = make()
    if value is not None:
        groups = [value] if single else value
        derived.store(path, {f"g{i}_{j}": array for i, group in enumerate(groups) for j, array in enumerate(group)},
                      KEEP)
    return value


def _groups(arrays: dict) -> list[tuple]:
    """The groups stored as g<i>_<j> (group i, array j), in order."""
    count = 1 + max(int(name[1:].split("_")[0]) for name in arrays)
    return [tuple(arrays[f"g{i}_{j}"] for j in range(sum(n.startswith(f"g{i}_") for n in arrays)))
            for i in range(count)]


def _are_groups(arrays: dict, n: int) -> bool:
    """Whether stored arrays can be searches among n voters: groups g<i>_0, g<i>_1, ... of integer arrays with
    values in [0, n) and float distances, all finite and of one length per group, at most n."""
    if not arrays or any(not name.startswith("g") for name in arrays):
        return False
    for group in _groups(arrays):
        if len(group) < 2 or len({len(a) for a in group}) != 1 or len(group[0]) > n:
            return False
        for a in group:
            if not np.isfinite(a).all() or (a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() >= n)):
                return False
    return True


def voter_rows(c: Context, space: str, chosen: np.ndarray) -> np.ndarray | None:
    """The `chosen` samples as float64 vectors in `space` (None when the audit has no such space)."""
    if space == "patches":  # built from the audited images alone (genaudit.patches), once per Dataset and voters
        if c.dataset is None:
            return None
        return c.dataset.derived_from(("patches", c.opts.seed, chosen.tobytes()), lambda: patch_space(
            images_of(c.dataset, chosen), c.opts.seed, derived.folder("patches"), workers(c.opts.threads)))
    x = c.fs.features if space == "features" else c.spaces.get(space)
    if x is None:
        return None
    # batches kept by the trunk pass are flat already: their voters' rows go straight to float64
    return x.take(chosen, np.float64) if isinstance(x, Rows) else flat_space(x[chosen])


def images_of(dataset, chosen: np.ndarray, batch: int = 256) -> np.ndarray:
    """The `chosen` samples preprocessed, as the patch space reads them: `pooled` a batch at a time, so large
    images never sit in memory whole at full resolution."""
    return np.concatenate([pooled(dataset.preprocess(dataset.x[chosen[i : i + batch]]))
                           for i in range(0, len(chosen), batch)])


def training_size(c: Context) -> int:
    """How many images the model trained on: `--train-size`, else the data set's size (read as its training set);
    the audited count without a data set."""
    spec = c.dataset.spec if c.dataset is not None else {}
    return int(spec.get("train_size") or spec.get("source_size") or len(c.fs.predictions))


def at_training_size(c: Context, space: str) -> dict:
    """The vote in `space` ("input" or "patches") carried to the training set's size: the model trained on all
    of it, the vote ran among `samples` of it, and a vote among more neighbours agrees more (with the labels, and
    with a model that generalizes). The curve among n/8, n/4, n/2 voters gives each agreement's power law
    (`extrapolate`): `value` (the model's agreement carried whole, which the estimate reads) and
    `reference_agreement`; and `value_by_part`, the model's agreement carried part by part (`carried_agreement`),
    which does not take an underfit model's own errors for the vote's (all three by `carried`)."""
    chosen = voters(c)
    reference, predictions = c.fs.reference[chosen], c.fs.predictions[chosen]
    labels = c.fs.labels[chosen] if c.fs.labels is not None else None
    indices, distances = neighbours_in(c, space)
    size = training_size(c)
    return {"size": size, **vote_at_size(None, reference, predictions,
                                         vote_of(indices[:, :K], distances[:, :K], reference), size, K,
                                         seed=c.opts.seed, strata=labels, searches=curve_searches(c, space))}


def curve_searches(c: Context, space: str) -> list[tuple]:
    """The learning curve's neighbour searches among n/8, n/4 and n/2 of the voters in `space` (a CARRIED space:
    kept like its main search, `of_data`)."""
    chosen = voters(c)
    labels = c.fs.labels[chosen] if c.fs.labels is not None else None
    return of_data(c, space, chosen, ("curve", labels), lambda: curve_neighbours(
        voter_rows(c, space, chosen), K, seed=c.opts.seed, strata=labels, workers=blas_callers(c.opts.threads)))


SPACES = ("input", "patches", "early", "features")  # the spaces the votes run in, in registry order


def search_all(c: Context) -> None:
    """Make every neighbour search this audit's votes read side by side, on `workers` threads: each space's
    search among the voters (the patch space built first, inside its task) and the carried spaces' curves. The
    votes then find them made (each made once: `Context.shared`, `Dataset.derived_from`). The searches are the
    same whichever thread makes them; on two cores the first audit of a set of samples, which makes all of them,
    takes about the longest instead of the sum. Each search splits its own work too (`blas_callers` threads), so
    that the largest (the early layer's, 2,000 x 4,096 values) does not hold one core while the other idles."""
    def task(space: str) -> None:
        if neighbours_in(c, space) is not None and space in CARRIED and c.dataset is not None:
            curve_searches(c, space)

    threads = workers(c.opts.threads)
    if threads > 1:  # with one, the votes make them in order
        voters(c)  # drawn once, before the tasks read it
        each(task, [s for s in SPACES if not (s in LABELLED_ONLY and not c.fs.labels_used)], threads,
             "genaudit-search")


def _in(space: str):
    def compute(c: Context) -> dict | None:
        if space in LABELLED_ONLY and not c.fs.labels_used:
            return None
        c.shared("searched", lambda: search_all(c))  # the first vote of the audit makes them all at once
        found = neighbours_in(c, space)
        if found is None:
            return None
        chosen = voters(c)
        result = neighbour_agreement(None, c.fs.reference[chosen], c.fs.predictions[chosen], K, space=space,
                                     neighbours=found)
        result["standard_error"] = share_error(result["value"], result["samples"])
        if space == "patches":  # how much the images were pooled before the space was built (1: not at all)
            result["pooled_by"] = pooling(*c.dataset.sample_shape[1:])
        if space in CARRIED:
            result["at_training_size"] = at_training_size(c, space)
        return result
    return compute


_MEANING = ("Fraction of audited samples whose prediction equals the leave-one-out vote of their {k} nearest "
            "audited neighbours' reference labels{where}: an out-of-sample guess of each sample's class built from "
            "the training data alone.")
_READING = ("Higher = the model agrees with what its training neighbours say; memorizing wrong labels or "
            "underfitting both lower it. A strong predictor of held-out accuracy where distances in this space "
            "are meaningful (docs/validity.md). With labels the reference is the given labels; without, the "
            "model's own predictions (weaker).")


def _vote_in(space: str, label: str, short: str, where: str, formula: str, source: str, tag: str,
             reading: str = _READING) -> Diagnostic:
    """The neighbour-vote diagnostic of one space: result at `neighbours.<space>`, metric `neighbours_<space>`."""
    return Diagnostic(
        f"neighbours.{space}", "space", _in(space),
        (Metric(name=f"neighbours_{space}", path=f"neighbours.{space}.value", label=f"neighbour vote: {label}",
                group="estimate", better=Better.HIGHER, short=short, meaning=_MEANING.format(k=K, where=where),
                formula=formula, source=source, reading=reading, tag=tag,
                error=f"neighbours.{space}.standard_error"),),
    )


PATCHES = _vote_in("patches", "patches", "agrees with its patch neighbours",
                   " in the patch space built from the audited images alone (whitened 6x6 patches, 128 k-means "
                   "centroids, quadrant-pooled: genaudit.patches)",
                   "as neighbour agreement, input, with x_n the image's patch features (Coates & Ng 2011)",
                   "genaudit validity study; patch features after Coates & Ng 2011", "nb patch",
                   _READING.rsplit(" With labels", 1)[0] + " The estimate reads it; it runs in labelled audits of "
                   "images only (the reference is the given labels).")
INPUT = _vote_in("input", "input", "agrees with its input neighbours",
                 " in input space (preprocessed pixels, pooled above 4,096 values)",
                 "mean_n [ŷ_n = vote_{k-NN(x_n), leave-one-out}(reference)], k = 10, Euclidean",
                 "neighbour-vote reference (genaudit validity study); after PGDL's pseudo-held-out measures",
                 "nb input")
EARLY = _vote_in("early", "early layer", "agrees with early-layer neighbours",
                 " in the space of the model's first activation",
                 "as neighbour agreement, input, with x_n the first activation's output", "genaudit validity study",
                 "nb early")
FEATURES = _vote_in("features", "features", "agrees with feature neighbours", " in the feature layer's space",
                    "as neighbour agreement, input, with x_n the feature layer's values", "genaudit validity study",
                    "nb feat")
