"""The patch space: a representation of images built from the audited training images alone (no model, no label),
in which the neighbour vote is a far better reference than raw pixels on natural images.

Coates & Ng (2011), "An analysis of single-layer networks in unsupervised feature learning": every 6 x 6 patch of
an image (all channels), each normalized to zero mean and unit variance (regularized), whitened (ZCA, ε = 0.1),
encoded against K = 128 centroids found by k-means on 100,000 of them with the "triangle" activation
max(0, mean_k d_k − d_k) (d_k: the patch's distance to centroid k), and averaged over the image's four quadrants:
4 K = 512 values per image. Seeded, so the same images and seed give the same space. The fit (the patches'
normalization, the whitening and k-means) runs in float64: k-means turns the last bits of its inputs into other
centroids, and in float32 the BLAS kernels of different CPUs, which sum in different orders, gave
different spaces (0.5.5: the vote moved by a few samples and the estimate by up to 0.005 between two machines).
In float64 those differences stay near 1e-16, far below any distance k-means compares (its assignments are
found in float32 where a bound on float32's error proves them exact, `_nearest`). The images are encoded in
float32, whose rounding moves the space's values by about 1e-7 and a neighbour only at a near tie.

Images are first average-pooled to at most MAX_SIDE pixels a side, then each channel is scaled so its values span
[0, 1]: a preprocessing such as x / 255 or a normalization by a mean and standard deviation per channel (as
torchvision's Normalize) does not change the space.
In genaudit's validity study (zoo/study_patches.py, docs/validity.md) the vote in this space ranks held-out accuracy
better than the pixel vote in every zoo and data set, CIFAR-10 above all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genaudit import derived
from genaudit.threads import each

SIZE = 6  # patch side
CENTROIDS = 128  # k-means centroids (the space has 4 x CENTROIDS values)
FIT_IMAGES, FIT_PATCHES, ROUNDS = 400, 100_000, 10  # k-means: patches of 400 images, 100,000 of them, 10 rounds
WHITENING = 0.1  # ZCA: eigenvalues + 0.1
CONTRAST = np.float32(10.0 / 255**2)  # a patch's variance + 10 on 0-255 pixels (Coates & Ng)
MAX_SIDE = 32  # larger images are average-pooled to at most this many pixels a side
CHUNK = 8  # images encoded at a time (their patches' distances stay in a few MB of cache)
ASSIGN = 8_192  # k-means: rows assigned to their nearest centre at a time (their distances: 8 MB)
BLOCK = 8_192  # the fit's patches gathered and whitened this many at a time (a multiple of 64: BLAS computes
#                each row of a block's product as it does in the whole product)


def pooling(height: int, width: int) -> int:
    """The smallest whole factor that brings both sides to at most MAX_SIDE pixels."""
    return max(1, -(-max(height, width) // MAX_SIDE))


def usable(shape: tuple) -> bool:
    """Whether samples of this shape (C, H, W) are images the patch space can be built on: at least SIZE pixels
    a side once pooled."""
    if len(shape) != 3:
        return False
    f = pooling(*shape[1:])
    return min(shape[1] // f, shape[2] // f) >= SIZE


def pooled(images: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W) as float32, average-pooled by `pooling`'s factor (rows and columns that do not fill a
    block dropped); a batch at a time keeps large images' memory bounded."""
    x = np.asarray(images, np.float32)
    f = pooling(*x.shape[2:]) if x.ndim == 4 else 1  # not images: as they are (`usable` refuses them)
    if f > 1:
        n, c, h, w = x.shape
        x = x[:, :, : h // f * f, : w // f * f].reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))
    return x


def prepared(images: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W) `pooled`, then each channel scaled so its values span [0, 1] (a channel with one value
    becomes 0): float32, contiguous."""
    x = pooled(images)
    lo, hi = x.min(axis=(0, 2, 3), keepdims=True), x.max(axis=(0, 2, 3), keepdims=True)
    span = hi - lo
    return np.ascontiguousarray((x - lo) / np.where(span > 0, span, 1), np.float32)


def _patches(images: np.ndarray) -> np.ndarray:
    """Every SIZE x SIZE patch of (N, C, H, W) images: (N, P, C * SIZE * SIZE), patches in row-major order."""
    n, c = images.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(images, (SIZE, SIZE), axis=(2, 3))
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, windows.shape[2] * windows.shape[3], c * SIZE * SIZE)


def _normalized(p: np.ndarray) -> np.ndarray:
    """Each patch (last axis) minus its mean, divided by sqrt(its variance + CONTRAST), in p's float type, in
    place (p is an array of the caller's own: a fresh copy of the patches)."""
    share = np.full(p.shape[-1], 1.0 / p.shape[-1], p.dtype)  # means as products: far faster than .mean here
    p -= (p @ share)[..., None]
    variance = np.einsum("...i,...i->...", p, p)[..., None] * share[0]
    p *= 1.0 / np.sqrt(variance + CONTRAST)
    return p


def _fit_sample(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The patches the whitening and the centroids are fitted on, normalized in float64: FIT_PATCHES drawn among
    every patch (row-major, as `_patches` lists them) of FIT_IMAGES of the images; only the drawn patches are
    copied."""
    n, c, h, w = images.shape
    chosen = images[rng.choice(n, min(n, FIT_IMAGES), replace=False)]
    rows, cols = h - SIZE + 1, w - SIZE + 1
    total = len(chosen) * rows * cols
    image, position = np.divmod(rng.choice(total, min(total, FIT_PATCHES), replace=False), rows * cols)
    row, col = np.divmod(position, cols)
    windows = np.lib.stride_tricks.sliding_window_view(chosen, (SIZE, SIZE), axis=(2, 3))  # m, C, rows, cols, s, s
    sample = np.empty((len(image), c * SIZE * SIZE))  # gathered straight into float64 (an exact widening)
    for start in range(0, len(image), BLOCK):
        at = slice(start, start + BLOCK)
        sample[at] = windows[image[at], :, row[at], col[at]].reshape(-1, c * SIZE * SIZE)
    return _normalized(sample)


def _whitening(sample: np.ndarray, block: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """The patches' mean and ZCA matrix (covariance accumulated a block of rows at a time, eigendecomposition;
    float64)."""
    mean = sample.mean(axis=0, dtype=np.float64)
    second = np.zeros((sample.shape[1], sample.shape[1]))
    for start in range(0, len(sample), block):
        centred = sample[start : start + block] - mean
        second += centred.T @ centred
    eig, vec = np.linalg.eigh(second / max(len(sample) - 1, 1))
    zca = vec @ np.diag(1.0 / np.sqrt(eig + WHITENING)) @ vec.T
    return mean, zca


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, rounds: int = ROUNDS, workers: int = 1) -> np.ndarray:
    """Lloyd's k-means on the rows of x (float64) from k distinct rows drawn by `rng`: the k centres after `rounds`
    rounds (a centre left without members is redrawn from the rows). Each centre is the mean of its members
    summed in row order (`np.bincount` per column), the same on every CPU. Rows are assigned ASSIGN at a time,
    each block by the same product whichever of `workers` threads takes it: the same centres with any number of
    them."""
    x = np.asarray(x, np.float64)
    x32, lengths = x.astype(np.float32), np.sqrt(np.einsum("ij,ij->i", x, x))  # for `_nearest`
    columns = np.ascontiguousarray(x.T)  # each column's values in row order, for the members' sums
    centres = x[rng.choice(len(x), k, replace=len(x) < k)].copy()  # too few rows: some drawn twice
    near = np.empty(len(x), np.intp)
    blocks = range(0, len(x), ASSIGN)

    def assign(starts: range) -> None:
        for start in starts:
            rows = slice(start, start + ASSIGN)
            near[rows] = _nearest(x[rows], x32[rows], lengths[rows], centres)

    workers = max(1, min(workers, len(blocks)))
    for _ in range(rounds):
        each(assign, [blocks[i::workers] for i in range(workers)], workers, "genaudit-kmeans")
        counts = np.bincount(near, minlength=k)
        filled = counts > 0
        sums = np.stack([np.bincount(near, weights=column, minlength=k) for column in columns], axis=1)
        centres[filled] = sums[filled] / counts[filled, None]
        for i in np.flatnonzero(~filled):
            centres[i] = x[rng.integers(len(x))]
    return centres


def _nearest(x: np.ndarray, x32: np.ndarray, lengths: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's nearest centre (the lowest index among equals): argmin |c|^2 - 2 x.c, as float64 finds it.

    Found first in float32 (`x32`: x rounded; half the work), and kept for every row whose runner-up is further
    than twice the bound on float32's error (`lengths`: the rows' norms): rounding x and the centres and summing
    D products in any order moves each distance by at most (γ_D + 3u)(2 |x| |c| + |c|^2), u = 2^-24,
    γ_D = D u / (1 - D u), to first order (taken 1% larger, which covers the higher orders and the rounding of the
    gap itself), so such a row's winner is the exact one, which float64 finds too. The other rows (near ties) are
    decided in float64."""
    c32, squares = centres.astype(np.float32), (centres**2).sum(1)
    d = x32 @ (-2 * c32.T)
    d += (c32**2).sum(1)
    rows = np.arange(len(d))
    best = d.argmin(axis=1)
    first = d[rows, best]
    d[rows, best] = np.inf
    gap = d.min(axis=1) - first
    longest = np.sqrt(squares.max())
    u = 2.0**-24
    error = 1.01 * (x.shape[1] * u / (1 - x.shape[1] * u) + 3 * u) * (2 * lengths * longest + longest**2)
    unsure = np.flatnonzero(~(gap > 2 * error))  # NaN-safe: a row that cannot be certified is decided in float64
    if len(unsure):
        exact = x[unsure] @ (-2 * centres.T)  # exactly -2 (x @ centres.T), and |c|^2 + (-2 x.c) == |c|^2 - 2 x.c
        exact += squares
        best[unsure] = exact.argmin(axis=1)
    return best


def _quadrants(height: int, width: int) -> np.ndarray:
    """(4, height * width) weights averaging a height x width map (row-major) over its four quadrants: top left,
    top right, bottom left, bottom right, split after the first `height // 2` rows and `width // 2` columns."""
    bottom, right = np.arange(height) >= height // 2, np.arange(width) >= width // 2
    weights = np.zeros((4, height, width), np.float32)
    for q, (b, r) in enumerate([(False, False), (False, True), (True, False), (True, True)]):
        mask = (bottom == b)[:, None] & (right == r)[None, :]
        if mask.any():  # a map of one row or column has empty quadrants: their values stay 0
            weights[q][mask] = 1.0 / mask.sum()
    return weights.reshape(4, -1)


def patch_features(images: np.ndarray, seed: int = 0, workers: int = 1) -> np.ndarray:
    """The patch space's vectors (N, 4 * CENTROIDS, float64) of `prepared` images (N, C, H, W): see the module
    docstring. The whitening and the centroids are fitted on patches of FIT_IMAGES of the images (seeded; k-means
    assigns its rows on `workers` threads). The images are then encoded CHUNK at a time, each chunk by the same
    operations whichever of `workers` threads (numpy releases the GIL) takes it: the same space bit for bit with
    any number of them."""
    n, c, h, w = images.shape
    rng = np.random.default_rng(seed)
    sample = _fit_sample(images, rng)
    mean, zca = _whitening(sample)
    sample -= mean  # in place: the sample is not read again
    for start in range(0, len(sample), BLOCK):  # whitened in place, as the whole product computes each row
        sample[start : start + BLOCK] = sample[start : start + BLOCK] @ zca
    centres = kmeans(sample, CENTROIDS, rng, workers=workers).astype(np.float32)
    mean, zca = mean.astype(np.float32), zca.astype(np.float32)  # the encoding runs in float32
    quadrants = _quadrants(h - SIZE + 1, w - SIZE + 1)
    out = np.empty((n, 4 * CENTROIDS))
    minus_twice, squares = -2 * centres.T, (centres**2).sum(1)
    average = np.full((CENTROIDS, 1), 1.0 / CENTROIDS, np.float32)

    def encode(starts: range) -> None:
        for start in starts:
            white = _normalized(_patches(images[start : start + CHUNK]))
            white -= mean
            white = white @ zca  # (n, P, C * 36)
            d = white @ minus_twice
            d += np.einsum("...i,...i->...", white, white)[..., None] + squares
            np.maximum(d, 0, out=d)
            np.sqrt(d, out=d)
            act = d @ average - d
            np.maximum(act, 0, out=act)
            out[start : start + CHUNK] = (quadrants @ act).reshape(len(act), -1)

    starts = range(0, n, CHUNK)
    workers = max(1, min(workers, len(starts)))
    each(encode, [starts[i::workers] for i in range(workers)], workers, "genaudit-patches")
    return out


SPACE = "p2"  # in the on-disk entries' digests: bumped whenever the space's definition or computation changes
KEEP = 16  # spaces kept on disk (8 MB for 2,000 images), the least recently used dropped first


def patch_space(images: np.ndarray, seed: int = 0, cache: Path | None = None, workers: int = 1) -> np.ndarray | None:
    """The patch space of preprocessed samples (N, C, H, W): `patch_features` of the `prepared` images (encoded by
    `workers` threads), read-only; None when the samples are not images (`usable`). It depends on the images and
    the seed only, so it is kept on disk: any process with the same `cache` folder (`genaudit.derived`) reads the
    space an audit of the same images and seed built. (In the process, the audit keeps it on its `Dataset`, so
    `compare` builds it once: `genaudit.diagnostics.neighbours.voter_rows`.)"""
    if not usable(images.shape[1:]):
        return None
    x = prepared(images)
    path = cache / f"{derived.digest(x.tobytes(), x.shape, seed, SPACE)}.npz" if cache is not None else None
    found = derived.load(path, lambda a: _is_space(a["space"], len(x))) if path else None
    space = found["space"] if found else patch_features(x, seed, workers)
    if path is not None and not found:
        derived.store(path, {"space": space}, KEEP)
    space.setflags(write=False)
    return space


def _is_space(array: np.ndarray, n: int) -> bool:
    """Whether a stored array can be the patch space of n images: its shape, dtype and finite values."""
    return array.shape == (n, 4 * CENTROIDS) and array.dtype == np.float64 and bool(np.isfinite(array).all())
