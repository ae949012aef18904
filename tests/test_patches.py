"""The patch space (genaudit.patches): patch extraction, normalization, quadrant pooling and k-means on hand cases;
the space's invariance to a global rescaling of the pixels, its determinism, and where it is not defined."""

from __future__ import annotations

import numpy as np
import pytest

from genaudit import patches as P


def test_patches_hand_case():
    """A 2-channel 7x7 image has four 6x6 patches, row-major, each its channels' windows one after the other."""
    image = np.arange(98, dtype=np.float32).reshape(1, 2, 7, 7)
    out = P._patches(image)
    assert out.shape == (1, 4, 72)
    assert out[0, 0, :6].tolist() == [0, 1, 2, 3, 4, 5]  # channel 0, top-left window, first row
    assert out[0, 0, 36:42].tolist() == [49, 50, 51, 52, 53, 54]  # channel 1's window follows
    assert out[0, 1, 0] == 1 and out[0, 2, 0] == 7 and out[0, 3, 0] == 8  # the windows' top-left pixels


def test_normalized_hand_case():
    """(p - mean) / sqrt(var + 10/255²): [1, 3] has mean 2 and variance 1."""
    p = np.array([[1.0, 3.0], [5.0, 5.0]], np.float32)
    out = P._normalized(p)
    scale = 1 / np.sqrt(1 + 10 / 255**2)
    assert out[0] == pytest.approx([-scale, scale], rel=1e-6)
    assert out[1].tolist() == [0.0, 0.0]  # a flat patch stays flat (the contrast term keeps it finite)


def test_quadrants_average_each_quarter():
    """A 3x4 map splits after row 1 and column 2: quadrants of 2, 2, 4 and 4 positions, each weighted evenly."""
    w = P._quadrants(3, 4)
    assert w.shape == (4, 12)
    assert w.sum(axis=1) == pytest.approx([1, 1, 1, 1])
    assert (w > 0).sum(axis=1).tolist() == [2, 2, 4, 4]
    assert (w > 0).sum(axis=0).tolist() == [1] * 12  # every position in exactly one quadrant
    assert w[0].reshape(3, 4)[0, :2].tolist() == [0.5, 0.5]
    one = P._quadrants(1, 1)  # a 6 x 6 image has one patch: it is the bottom-right quadrant, the others are empty
    assert one.tolist() == [[0.0], [0.0], [0.0], [1.0]]


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 10], [-10, 10]], np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centres]).astype(np.float32)
    found = P.kmeans(x, 3, np.random.default_rng(1))
    order = np.lexsort(found.T[::-1])
    expected = np.stack([x[i * 50:(i + 1) * 50].mean(0) for i in range(3)])
    assert found[order] == pytest.approx(expected[np.lexsort(expected.T[::-1])], abs=1e-4)


def _lloyd(x: np.ndarray, k: int, rng: np.random.Generator, rounds: int = P.ROUNDS, product=np.matmul) -> np.ndarray:
    """k-means as written (float64; |c|^2 - 2 x.c; each centre the mean of its members in row order): the centres
    `P.kmeans` must give, since the patch space and every vote read from it depend on them. `product`: how x.c
    is summed (another order stands for another CPU's BLAS kernel)."""
    x = x.astype(np.float64)
    centres = x[rng.choice(len(x), k, replace=len(x) < k)].copy()
    for _ in range(rounds):
        near = np.argmin((centres**2).sum(1) - 2 * product(x, centres.T), axis=1)
        for i in range(k):
            if np.any(near == i):
                centres[i] = x[near == i].sum(axis=0) / np.count_nonzero(near == i)
        for i in sorted(set(range(k)) - set(near.tolist())):
            centres[i] = x[rng.integers(len(x))]
    return centres


@pytest.mark.parametrize("rows, dims, k", [(3000, 36, 128), (2000, 108, 128), (300, 108, 128), (60, 8, 128)])
def test_kmeans_is_the_written_lloyd_bit_for_bit(rows, dims, k):
    """Random whitened-like rows, with many empty clusters (redrawn) when there are few rows, and fewer rows than
    centres (drawn twice) in the last case."""
    x = np.random.default_rng(rows).standard_normal((rows, dims)).astype(np.float32)
    assert P.kmeans(x, k, np.random.default_rng(7)).tobytes() == _lloyd(x, k, np.random.default_rng(7)).tobytes()


def test_nearest_centre_near_a_tie_is_decided_in_float64():
    """Rows 1e-9 (relative) from equidistant between two centres: float32's rounding cannot tell which is nearer,
    float64 can. Every row gets the exact nearest centre (extended precision's), far ones from the float32 pass and
    these from float64."""
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((30, 12))
    midway = (centres[:15] + centres[15:]) / 2
    towards = np.where(rng.random((15, 1)) < 0.5, centres[:15], centres[15:])
    near_ties = midway + 1e-9 * (towards - midway)  # a hair nearer one of the two
    x = np.concatenate([near_ties, rng.standard_normal((200, 12))])
    found = P._nearest(x, x.astype(np.float32), np.linalg.norm(x, axis=1), centres)
    c, xl = centres.astype(np.longdouble), x.astype(np.longdouble)
    exact = np.argmin((c**2).sum(1) - 2 * xl @ c.T, axis=1)
    assert np.array_equal(found, exact)
    d = np.sort((c**2).sum(1) - 2 * xl @ c.T, axis=1)
    assert np.count_nonzero(d[:, 1] - d[:, 0] < 1e-6) >= 5  # near ties float32 cannot resolve were among them


def test_kmeans_gives_the_same_centres_on_any_number_of_threads(monkeypatch):
    monkeypatch.setattr(P, "ASSIGN", 256)  # 12 blocks of rows, shared among the threads
    x = np.random.default_rng(3).standard_normal((3000, 36))
    one = P.kmeans(x, 32, np.random.default_rng(7))
    assert all(P.kmeans(x, 32, np.random.default_rng(7), workers=w).tobytes() == one.tobytes() for w in (2, 3))


def _other_order(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b summed term by term in index order (no BLAS): the last bits of another kernel's sums."""
    out = np.zeros((a.shape[0], b.shape[1]))
    for j in range(a.shape[1]):
        out += a[:, j : j + 1] * b[j : j + 1, :]
    return out


def test_kmeans_gives_the_same_centres_whichever_order_the_products_sum_in():
    """In float64, products summed in another order (another CPU's BLAS) move no assignment: the centres agree to
    rounding. (0.5.5's float32 fit gave other centroids on two machines.)"""
    x = np.random.default_rng(1).standard_normal((2000, 36))
    found = P.kmeans(x, 64, np.random.default_rng(7))
    assert np.abs(found - _lloyd(x, 64, np.random.default_rng(7), product=_other_order)).max() < 1e-12


def test_prepared_scales_and_pools():
    x = np.arange(2 * 1 * 64 * 64, dtype=np.float32).reshape(2, 1, 64, 64) * 3 + 7
    out = P.prepared(x)
    assert out.shape == (2, 1, 32, 32)  # 64 pixels a side pooled by 2, then scaled to span [0, 1]
    blocks = x.reshape(2, 1, 32, 2, 32, 2).mean(axis=(3, 5))
    assert out[0, 0, 0, 0] == 0.0 and out.max() == 1.0
    assert out[0, 0, 0, 1] == pytest.approx((blocks[0, 0, 0, 1] - blocks.min()) / (blocks.max() - blocks.min()))
    assert P.pooled(x[:, :, :, :32]).shape == (2, 1, 32, 16) and P.pooled(np.zeros((3, 64))).shape == (3, 64)
    assert P.prepared(np.full((3, 1, 8, 8), 5.0)).tolist() == np.zeros((3, 1, 8, 8)).tolist()  # constant: no span
    two = np.stack([np.arange(16.0).reshape(4, 4), np.full((4, 4), 9.0)])[None]  # a varying and a flat channel
    assert P.prepared(two)[0, 0].max() == 1.0 and P.prepared(two)[0, 1].tolist() == np.zeros((4, 4)).tolist()


@pytest.fixture(scope="module")
def images():
    """Small structured images: 60 of 3 x 12 x 12, bright squares at random places on noise."""
    rng = np.random.default_rng(0)
    x = rng.random((60, 3, 12, 12)).astype(np.float32) * 0.2
    for i, (r, c) in enumerate(rng.integers(0, 8, (60, 2))):
        x[i, :, r:r + 4, c:c + 4] += 0.8
    return x


def test_patch_space_ignores_a_global_rescaling_and_is_deterministic(images, monkeypatch):
    monkeypatch.setattr(P, "CENTROIDS", 8)
    monkeypatch.setattr(P, "FIT_PATCHES", 2000)
    a = P.patch_space(images, seed=3)
    assert a.shape == (60, 32) and a.dtype == np.float64
    assert (a >= 0).all() and a.max() > 0  # triangle activations
    assert np.array_equal(P.patch_space(images, seed=3), a)
    b = P.patch_space(images * 255.0 - 40.0, seed=3)  # the same images in other units
    assert b == pytest.approx(a, rel=1e-3, abs=1e-3)  # float32 rounding
    mean, std = np.array([0.49, 0.48, 0.45])[:, None, None], np.array([0.25, 0.24, 0.26])[:, None, None]
    normalized = ((images - mean) / std).astype(np.float32)  # torchvision's Normalize, per channel
    assert P.patch_space(normalized, seed=3) == pytest.approx(a, rel=1e-3, abs=1e-3)
    assert not np.allclose(P.patch_space(images, seed=4), a)  # another seed: other centroids


@pytest.mark.parametrize("workers", [2, 3, 100])
def test_the_encoding_threads_give_the_same_space_bit_for_bit(images, monkeypatch, workers):
    """The images are encoded CHUNK at a time whichever thread takes a chunk (61 images: 8 chunks, the last of 5)."""
    monkeypatch.setattr(P, "CENTROIDS", 8)
    monkeypatch.setattr(P, "FIT_PATCHES", 2000)
    x = P.prepared(np.concatenate([images, images[:1] * 0.5]))
    one = P.patch_features(x, seed=1)
    assert np.array_equal(P.patch_features(x, seed=1, workers=workers), one)
    assert np.array_equal(P.patch_space(x, seed=1, workers=workers), one)


def test_no_patch_space_for_vectors_or_tiny_images():
    assert P.patch_space(np.zeros((10, 64), np.float32)) is None
    assert P.patch_space(np.zeros((10, 1, 5, 5), np.float32)) is None
    assert P.usable((3, 6, 6)) and not P.usable((3, 6, 5)) and not P.usable((64,))
    assert P.usable((3, 224, 224)) and not P.usable((1, 200, 7))  # 200 x 7 pools by 7 to 28 x 1


@pytest.fixture
def built(monkeypatch) -> list:
    """A small, uncached patch space whose builds are recorded: the seed of each `patch_features` call."""
    monkeypatch.setattr(P, "CENTROIDS", 8)
    monkeypatch.setattr(P, "FIT_PATCHES", 2000)
    calls = []
    real = P.patch_features
    monkeypatch.setattr(P, "patch_features", lambda x, seed, workers=1: calls.append(seed) or real(x, seed, workers))
    return calls


def test_patch_space_without_a_cache_folder_is_built_each_time_read_only(images, built):
    first = P.patch_space(images, seed=0)
    assert not first.flags.writeable
    assert np.array_equal(P.patch_space(images.copy(), seed=0), first) and built == [0, 0]


def test_patch_space_is_kept_on_disk(images, built, monkeypatch, tmp_path):
    """Another process with the same cache folder loads the space instead of building it; an entry that is not the
    expected array is rebuilt; an unwritable folder only costs the time; at most KEEP entries stay."""
    first = P.patch_space(images, seed=0, cache=tmp_path)
    [entry] = tmp_path.glob("*.npz")
    again = P.patch_space(images, seed=0, cache=tmp_path)
    assert built == [0] and np.array_equal(again, first)
    entry.write_bytes(b"not an array")
    assert np.array_equal(P.patch_space(images, seed=0, cache=tmp_path), first) and built == [0, 0]
    np.savez(entry, space=np.zeros((3, 3)))  # an array of another shape
    P.patch_space(images, seed=0, cache=tmp_path)
    assert built == [0, 0, 0]
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert P.patch_space(images, seed=0, cache=blocked / "sub") is not None  # cannot create the folder: built
    monkeypatch.setattr(P, "KEEP", 2)
    for seed in (1, 2, 3):
        P.patch_space(images, seed=seed, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_the_audit_votes_in_the_patch_space_with_labels_only(trained_mlp, tiny_data):
    import genaudit

    card = genaudit.audit(trained_mlp["onnx"], tiny_data)
    block = card["diagnostics"]["neighbours"]["patches"]
    assert block["space"] == "patches" and block["samples"] == 200
    assert 0 <= block["value"] <= 1 and block["at_training_size"]["size"] == 200 and block["pooled_by"] == 1
    assert "pooled" not in card["estimate"]["basis"]
    assert "the patch-space vote ran on all 200 training images" in card["estimate"]["basis"]
    assert "no patch space" not in card["estimate"]["basis"]
    free = genaudit.audit(trained_mlp["onnx"], tiny_data, labels=False)
    assert "patches" not in free["diagnostics"]["neighbours"] and "input" in free["diagnostics"]["neighbours"]


def test_samples_that_are_not_images_get_the_fallback_estimator(tiny_data, tmp_path):
    import torch
    from conftest import export_all

    import genaudit

    data = np.load(tiny_data)
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=data["x"].reshape(200, 64), y=data["y"])
    torch.manual_seed(0)
    vectors = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    card = genaudit.audit(export_all(vectors, torch.zeros(2, 64), tmp_path, "flat")["onnx"], flat)
    assert "patches" not in card["diagnostics"]["neighbours"]
    estimate = card["estimate"]
    assert estimate["accuracy"] is not None and "no patch space in this audit" in estimate["basis"]
    assert "the input vote ran on all 200 training images" in estimate["basis"]


@pytest.mark.parametrize("block", [64, 128, 320])
def test_the_fit_gathered_and_whitened_in_blocks_gives_the_same_space_bit_for_bit(images, monkeypatch, block):
    """The fit's patches gathered and whitened BLOCK rows at a time (a multiple of 64, the last block shorter)
    give the space of one block holding them all."""
    monkeypatch.setattr(P, "CENTROIDS", 8)
    monkeypatch.setattr(P, "FIT_PATCHES", 1001)
    x = P.prepared(images)
    monkeypatch.setattr(P, "BLOCK", 10**9)
    whole = P.patch_features(x, seed=2)
    monkeypatch.setattr(P, "BLOCK", block)
    assert P.patch_features(x, seed=2).tobytes() == whole.tobytes()


def test_fit_sample_draws_among_every_patch_without_listing_them():
    """The patches k-means is fitted on are those a draw among every patch of the chosen images (as `_patches`
    lists them) would give, copied alone."""
    x = np.random.default_rng(0).random((50, 3, 11, 9)).astype(np.float32)
    drawn = P._fit_sample(x, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    every = P._patches(x[rng.choice(50, 50, replace=False)]).reshape(-1, 108)
    chosen = every[rng.choice(len(every), len(every), replace=False)].astype(np.float64)
    assert drawn.dtype == np.float64 and np.array_equal(drawn, P._normalized(chosen))


def test_suspicion_counts_the_patch_neighbours_for_images(trained_mlp, tiny_data, tmp_path):
    """suspicion = (D_input + D_patches + D_early + D_features) / 40 (docs/suspects.md, genaudit 0.5.0)."""
    from genaudit.suspects import suspects

    data = np.load(tiny_data)
    y = data["y"].copy()
    y[::5] = (y[::5] + 1) % 4  # every fifth label wrong
    noisy = tmp_path / "noisy.npz"
    np.savez(noisy, x=data["x"], y=y)
    table = suspects(trained_mlp["onnx"], noisy)
    spaces = ("d_input", "d_patches", "d_early", "d_features")
    for row in table["rows"]:
        assert row["suspicion"] == pytest.approx(sum(row[s] for s in spaces) / 40)
    assert any(row["d_patches"] != row["d_input"] for row in table["rows"])
    assert table["summary"]["spaces"] == ["input", "patches", "early", "features"]


def test_large_images_are_pooled_a_batch_at_a_time():
    """The patch space reads large images pooled batch by batch: never all of them at full resolution."""
    from types import SimpleNamespace

    from genaudit.diagnostics.neighbours import images_of

    seen = []
    raw = np.random.default_rng(0).integers(0, 256, (10, 3, 128, 128), dtype=np.uint8)

    def preprocess(x):
        seen.append(len(x))
        return x.astype(np.float32) / 255

    out = images_of(SimpleNamespace(x=raw, preprocess=preprocess), np.arange(1, 10), batch=4)
    assert seen == [4, 4, 1] and out.shape == (9, 3, 32, 32)
    assert out == pytest.approx(P.pooled(raw[1:10].astype(np.float32) / 255))


def test_audits_of_one_dataset_share_what_depends_on_the_samples_alone(trained_mlp, cnn_paths, tiny_data,
                                                                       monkeypatch, tmp_path):
    """compare's checkpoints run on one Dataset object: the input and patch spaces' neighbours and the labels' curve
    votes are found once; the model-dependent spaces every time. Another process with the same cache reads them
    from disk; an entry that does not load as pairs is made again. The scorecards are those of separate audits."""
    import genaudit
    from genaudit.diagnostics import neighbours as N
    from genaudit.options import AuditOptions
    from genaudit.pipeline import audit_dataset

    monkeypatch.setenv("GENAUDIT_CACHE", str(tmp_path))
    builds = []
    real_build = P.patch_features
    monkeypatch.setattr(P, "patch_features", lambda *a, **kw: builds.append(1) or real_build(*a, **kw))
    searches = []
    real = N.nearest_neighbours
    monkeypatch.setattr(N, "nearest_neighbours", lambda x, k, **kw: searches.append(x.shape) or real(x, k, **kw))
    dataset = genaudit.data.load_data(str(tiny_data), samples=None)
    first = audit_dataset(trained_mlp["onnx"], dataset, AuditOptions())
    assert len(searches) == 10  # input and patches: the main search and the curve's three each; early; features
    second = audit_dataset(cnn_paths["onnx"], dataset, AuditOptions())
    assert len(searches) == 12 and {k[0] for k in dataset.derived} == {"input", "patches"}
    assert len(builds) == 1  # the patch space too: built once for the Dataset
    again = genaudit.data.load_data(str(tiny_data), samples=None)  # as in a new process: nothing in memory
    third = audit_dataset(trained_mlp["onnx"], again, AuditOptions())
    assert len(searches) == 14 and len(builds) == 1  # early and features only: the rest read from disk
    for entry in (tmp_path / "neighbours").glob("*.npz"):
        entry.write_bytes(b"not an archive")
    audit_dataset(trained_mlp["onnx"], genaudit.data.load_data(str(tiny_data), samples=None), AuditOptions())
    assert len(searches) == 24  # every entry unreadable: all made again
    monkeypatch.setattr(N, "nearest_neighbours", real)
    for path, card in ((trained_mlp["onnx"], first), (cnn_paths["onnx"], second), (trained_mlp["onnx"], third)):
        alone = genaudit.audit(path, str(tiny_data), samples=None)
        assert card["diagnostics"]["neighbours"] == alone["diagnostics"]["neighbours"]
        assert card["diagnostics"]["memorization"] == alone["diagnostics"]["memorization"]
        assert card["estimate"] == alone["estimate"]


def test_an_audit_of_larger_images_pools_them_and_says_so(tmp_path):
    """64 x 64 images are pooled by 2 before the patch space is built; the scorecard records it and the estimate's
    basis says the study validated the space on smaller images."""
    import torch
    from conftest import export_all

    import genaudit

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 40)
    x = rng.integers(0, 60, (80, 3, 64, 64)).astype(np.uint8)
    x[y == 1, :, :32] += 150  # class 1 lights the top half
    data = tmp_path / "big.npz"
    np.savez(data, x=x, y=y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, 2))
    card = genaudit.audit(export_all(net, torch.zeros(2, 3, 64, 64), tmp_path, "big")["onnx"], data, samples=None)
    assert card["diagnostics"]["neighbours"]["patches"]["pooled_by"] == 2
    assert "pooled these images by 2" in card["estimate"]["basis"]
