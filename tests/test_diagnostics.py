"""Each diagnostic against a hand-computed case and the properties that must hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genaudit.diagnostics import ablation, noise_robustness, selectivity
from genaudit.diagnostics._head import normalized_auc
from genaudit.diagnostics.ablation import ablation_masks
from genaudit.diagnostics.selectivity import selectivity_index
from genaudit.features import FeatureSet


def linear_head(w: np.ndarray, b: np.ndarray):
    return lambda f: f.reshape(len(f), -1) @ w + b


def featureset(features, head, labels=None) -> FeatureSet:
    logits = head(features)
    return FeatureSet(features.astype(np.float32), logits, logits.argmax(1), labels)


def random_problem(n=120, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, k)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32) * 0.1
    f = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    labels = rng.integers(0, k, n)
    return f, w, b, labels


def test_ablation_masks_hand_case():
    masks = ablation_masks(4, np.array([0.0, 0.5, 1.0]), np.array([[2, 0, 3, 1]]))
    np.testing.assert_array_equal(masks, [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]])


def test_normalized_auc_hand_case():
    assert normalized_auc(np.array([0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert normalized_auc(np.array([0, 1.0, 2.0]), np.array([0.8, 0.8, 0.8])) == pytest.approx(1.0)


def test_ablation_hand_case():
    # two units, two classes; class 0 needs unit 0, class 1 needs unit 1; bias favours class 0.
    f = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 3.0]], np.float32)
    head = linear_head(np.eye(2, dtype=np.float32), np.array([0.1, 0.0], np.float32))
    fs = featureset(f, head, labels=np.array([0, 1, 0, 1]))
    # order: unit 1 first. p=0: all right; p=0.5 (unit 1 zeroed): all predict 0 -> 2/4; p=1: bias -> class 0 -> 2/4
    result = ablation(head, fs, levels=3, order=np.array([1, 0]))
    assert result["curve"]["accuracy"] == pytest.approx([1.0, 0.5, 0.5])
    # AUC = trapezoid of [1, .5, .5] over [0, .5, 1] = 0.5*(0.75) + 0.5*(0.5) = 0.625
    assert result["auc"] == pytest.approx(0.625)


def test_ablation_at_zero_equals_clean_accuracy_and_full_ablation_is_the_bias():
    f, w, b, labels = random_problem()
    head = linear_head(w, b)
    fs = featureset(f, head, labels)
    curve = ablation(head, fs, repeats=3)["curve"]["accuracy"]
    assert curve[0] == pytest.approx(fs.clean_accuracy)
    # a linear head with every unit zeroed outputs its bias: the exact accuracy is known
    assert curve[-1] == pytest.approx(np.mean(labels == np.argmax(b)))


def test_label_free_ablation_starts_at_full_agreement():
    f, w, b, _ = random_problem()
    head = linear_head(w, b)
    fs = featureset(f, head, labels=None)
    assert ablation(head, fs)["curve"]["accuracy"][0] == 1.0


def test_permuting_units_changes_nothing():
    f, w, b, labels = random_problem()
    perm = np.random.default_rng(1).permutation(f.shape[1])
    order = np.random.default_rng(2).permutation(f.shape[1])
    head, head_p = linear_head(w, b), linear_head(w[perm], b)
    fs, fs_p = featureset(f, head, labels), featureset(f[:, perm], head_p, labels)
    inverse = np.argsort(perm)
    a = ablation(head, fs, order=order)
    a_p = ablation(head_p, fs_p, order=inverse[order])  # the same units, under their new indices
    assert a["curve"]["accuracy"] == pytest.approx(a_p["curve"]["accuracy"])
    assert selectivity(fs)["mean"] == pytest.approx(selectivity(fs_p)["mean"])
    assert sorted(selectivity(fs)["per_unit"]) == pytest.approx(sorted(selectivity(fs_p)["per_unit"]))


def test_conv_units_are_channels():
    rng = np.random.default_rng(0)
    f = np.abs(rng.normal(size=(40, 3, 2, 2))).astype(np.float32)
    w = rng.normal(size=(12, 2)).astype(np.float32)
    head = linear_head(w, np.zeros(2, np.float32))
    fs = featureset(f, head)
    assert fs.units == 3
    # ablating channel 0 is zeroing its whole 2x2 map: check against doing that by hand
    curve = ablation(head, fs, levels=4, order=np.array([0, 1, 2]))["curve"]["accuracy"]
    g = f.copy()
    g[:, 0] = 0
    assert curve[1] == pytest.approx(np.mean(head(g).argmax(1) == fs.predictions))


def test_ablation_is_deterministic_per_seed_and_batched_equals_single():
    from genaudit.diagnostics import _head

    f, w, b, labels = random_problem()
    head = linear_head(w, b)
    fs = featureset(f, head, labels)
    first = ablation(head, fs, seed=3)
    assert ablation(head, fs, seed=3) == first
    old = _head.CHUNK_BYTES
    try:
        _head.CHUNK_BYTES = 1  # one variant per head call
        assert ablation(head, fs, seed=3)["curve"] == first["curve"]
    finally:
        _head.CHUNK_BYTES = old


def test_noise_at_zero_is_clean_and_huge_margins_are_immune():
    f, w, b, labels = random_problem()
    head = linear_head(w, b)
    fs = featureset(f, head, labels)
    result = noise_robustness(head, fs)
    assert result["curve"]["accuracy"][0] == pytest.approx(fs.clean_accuracy)
    # a head whose class-0 bias dominates any noise keeps predicting class 0: noise AUC exactly 1
    immune = linear_head(w * 1e-6, np.array([100.0, 0, 0], np.float32))
    assert noise_robustness(immune, featureset(f, immune))["auc"] == pytest.approx(1.0)


def test_noise_scales_with_each_units_std():
    # unit 1 has 1000x the spread of unit 0, so relative noise must perturb it 1000x more in absolute terms;
    # a head reading only unit 0 with a margin of 0.5 sigma_0 flips at roughly the same scale either way.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 2)).astype(np.float32)
    scaled = base * np.array([1.0, 1000.0], np.float32)
    head = linear_head(np.array([[1.0, -1.0], [0.0, 0.0]], np.float32), np.zeros(2, np.float32))
    a = noise_robustness(head, featureset(base, head))["auc"]
    b = noise_robustness(head, featureset(scaled, head))["auc"]
    assert a == pytest.approx(b, abs=1e-6)
    assert a < 0.95  # noise of up to 2 sigma flips a good share of predictions


def test_selectivity_hand_case():
    # unit 0: class means (4, 1, 1) -> (4-1)/(4+1) = 0.6; unit 1: equal means -> 0; unit 2: dead -> 0
    values = np.array([[4, 2, 0], [4, 2, 0], [1, 2, 0], [1, 2, 0], [1, 2, 0], [1, 2, 0]], float)
    si, shifted = selectivity_index(values, np.array([0, 0, 1, 1, 2, 2]))
    assert si == pytest.approx([0.6, 0.0, 0.0])
    assert not shifted


def test_selectivity_shifts_negative_units_and_relabelling_changes_nothing():
    values = np.array([[-1.0], [-1.0], [1.0], [1.0]])
    si, shifted = selectivity_index(values, np.array([0, 0, 1, 1]))
    assert shifted and si == pytest.approx([1.0])  # shifted to (0, 0, 2, 2): one class only
    si_relabelled, _ = selectivity_index(values, np.array([7, 7, 3, 3]))
    assert si_relabelled == pytest.approx(si)


def test_cka_and_svcca_hand_cases_and_invariances():
    from genaudit.diagnostics.similarity import linear_cka, svcca

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)  # rotation, scale and shift change nothing
    assert svcca(x, x @ q)["mean"] == pytest.approx(1.0)
    # orthogonal one-dimensional representations: CKA exactly 0 by hand (Yc^T Xc = 0)
    a = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    b = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    assert linear_cka(a, b) == pytest.approx(0.0)
    assert svcca(a, b)["mean"] == pytest.approx(0.0)
    # independent noise is far less similar than a representation with itself
    assert linear_cka(x, rng.normal(size=(200, 6))) < 0.2
    # SVCCA keeps the directions holding 99% of the variance: a tiny extra dimension is dropped
    padded = np.hstack([x, 1e-6 * rng.normal(size=(200, 1))])
    assert svcca(x, padded)["dims"] == [6, 6]


def test_input_probes_hand_cases():
    from genaudit.diagnostics.input_space import augmentation_agreement, augmentations, input_noise_agreement

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 1, 6, 6)).astype(np.float32)
    constant = lambda images: np.tile([[0.0, 1.0]], (len(images), 1))  # noqa: E731
    assert input_noise_agreement(constant, x)["auc"] == pytest.approx(1.0)
    assert augmentation_agreement(constant, x)["mean"] == pytest.approx(1.0)
    # a model reading one pixel's sign flips under noise, and a shift moves that pixel away
    pixel = lambda images: np.stack([images[:, 0, 3, 3], -images[:, 0, 3, 3]], axis=1)  # noqa: E731
    noise = input_noise_agreement(pixel, x, levels=3)
    assert noise["curve"]["agreement"][0] == 1.0 and noise["auc"] < 1.0
    shifted = augmentations(x)["shift right"]
    np.testing.assert_array_equal(shifted[:, :, :, 2:], x[:, :, :, :-2])  # content moves 2 pixels right
    assert augmentation_agreement(pixel, x)["per_augmentation"]["shift right"] < 0.9


def test_closed_form_affine_head_matches_running_the_head():
    from genaudit.heads import AffineHead

    rng = np.random.default_rng(5)
    f = np.maximum(rng.normal(size=(150, 3, 2, 2)), 0).astype(np.float32)  # conv-shaped: units are channels
    w, b = rng.normal(size=(12, 4)), rng.normal(size=4)
    closed, generic = AffineHead(w, b), lambda x: x.reshape(len(x), -1) @ w + b
    labels = rng.integers(0, 4, 150)
    fs = featureset(f, generic, labels)
    assert ablation(closed, fs, seed=2) == ablation(generic, fs, seed=2)
    assert noise_robustness(closed, fs) == noise_robustness(generic, fs)


def _exact_predictions(features: np.ndarray, masks: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """argmax of (F * m) @ W + b for each mask, every product and sum in extended precision (the reference)."""
    f = features.reshape(len(features), -1).astype(np.longdouble)
    m = np.broadcast_to(masks, (len(masks), *features.shape[1:])).reshape(len(masks), -1).astype(np.longdouble)
    return np.stack([((f * row) @ weight.astype(np.longdouble) + bias.astype(np.longdouble)).argmax(axis=1)
                     for row in m])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), conv=st.booleans(), kind=st.sampled_from(["ablation", "single", "any"]))
def test_affine_head_predictions_under_masks_are_the_exact_ones(seed, conv, kind):
    """At an affine head each mask's predictions are built from a known variant's logits plus the units that
    differ (genaudit 0.5.6): the classes are those of exact arithmetic, whatever the masks (cumulative ablation
    orders, one unit zeroed, arbitrary keep values), and every unit kept gives the head's own outputs bit for
    bit (the ablation's first point is the clean accuracy)."""
    from genaudit.diagnostics._head import masked_predictions
    from genaudit.heads import AffineHead

    rng = np.random.default_rng(seed)
    units, classes = int(rng.integers(2, 40)), int(rng.integers(2, 12))
    shape = (units, 2, 2) if conv else (units,)
    f = np.maximum(rng.normal(size=(60, *shape)), 0).astype(np.float32)
    head = AffineHead(rng.normal(size=(f[0].size, classes)), rng.normal(size=classes))
    if kind == "ablation":
        orders = np.stack([rng.permutation(units) for _ in range(3)])
        keep = ablation_masks(units, np.linspace(0, 1, 11), orders)
    elif kind == "single":
        keep = 1 - np.eye(units, dtype=np.float32)
    else:
        keep = rng.choice(np.array([0, 0.5, 1, 2], np.float32), size=(7, units))
    keep = keep.reshape(len(keep), units, *(1,) * (len(shape) - 1))
    found = masked_predictions(head, f, np.concatenate([np.ones_like(keep[:1]), keep]))
    assert np.array_equal(found[1:], _exact_predictions(f, keep, head.weight, head.bias))
    assert np.array_equal(found[0], head(f).argmax(axis=1))
