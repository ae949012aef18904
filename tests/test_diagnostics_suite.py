"""Steadiness, consistency, magnitude, perplexity, nodes as classifiers and the selectivity extras: each against
a hand-computed case and the invariances it must have (unit order, class names, feature scale)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genaudit.diagnostics._classes import Classes
from genaudit.diagnostics.consistency import consistency
from genaudit.diagnostics.magnitude import magnitude
from genaudit.diagnostics.perplexity import nodes_as_classifiers, perplexity
from genaudit.diagnostics.selectivity_extra import (
    importance_correlation,
    mi_selectivity,
    selectivity_ordered_ablation,
    single_unit_importance,
)
from genaudit.diagnostics.steadiness import intra_class_variance, steadiness
from genaudit.features import FeatureSet


def linear_head(w: np.ndarray, b: np.ndarray):
    return lambda f: f.reshape(len(f), -1) @ w + b


def featureset(features, head=None, labels=None) -> FeatureSet:
    """Features with the given labels; without a head the logits are a placeholder (label-only diagnostics)."""
    features = np.asarray(features, np.float32)
    logits = head(features) if head is not None else np.zeros((len(features), 2), np.float32)
    return FeatureSet(features, logits, logits.argmax(1), None if labels is None else np.asarray(labels))


def random_problem(n=90, d=10, k=3, seed=0):
    """ReLU features whose class shifts some units, so every diagnostic has something to see."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    shift = rng.normal(size=(k, d))
    f = np.maximum(rng.normal(size=(n, d)) + shift[labels], 0).astype(np.float32)
    w = rng.normal(size=(d, k)).astype(np.float32)
    b = rng.normal(size=k).astype(np.float32) * 0.1
    return f, w, b, labels


def label_only(fs: FeatureSet) -> dict:
    """The aggregate of every label-only diagnostic, for the invariance checks."""
    st, mi, nodes = steadiness(fs), mi_selectivity(fs), nodes_as_classifiers(fs)
    return {
        "steadiness_value": st["value"], "steadiness_ratio": st["ratio"],
        "consistency": consistency(fs)["value"], "magnitude": magnitude(fs)["value"],
        "perplexity": perplexity(fs)["value"],
        "nodes_accuracy": nodes["accuracy"], "node_accuracy": nodes["mean_node_accuracy"],
        "mi_mean": mi["mean"], "mi_median": mi["median"],
    }


# ---------------------------------------------------------------- hand-computed cases

def test_steadiness_hand_case():
    # unit 0 = (1, 3 | 5, 5): class vars 1 and 0, alpha .5 each -> V = 0.5; total var = (6.25+.25+2.25+2.25)/4 = 2.75
    # unit 1 = (0, 2 | 0, 2): class vars 1 and 1 -> V = 1; total var 1.   ratio = 1.5 / 3.75 = 0.4
    f = np.array([[1, 0], [3, 2], [5, 0], [5, 2]], float)
    result = steadiness(featureset(f, labels=[0, 0, 1, 1]))
    assert result["per_unit"] == pytest.approx([0.5, 1.0])
    assert result["value"] == pytest.approx(0.75) and result["sum"] == pytest.approx(1.5)
    assert result["ratio"] == pytest.approx(0.4)
    # unequal classes: (0, 0, 3 | 7): class 0 mean 1, var (1+1+4)/3 = 2, alpha 3/4 -> 1.5; class 1 var 0
    assert intra_class_variance(np.array([[0.0], [0.0], [3.0], [7.0]]), np.array([0, 0, 0, 1])) == pytest.approx([1.5])


def test_steadiness_constant_layer_has_no_ratio():
    result = steadiness(featureset(np.ones((4, 3)), labels=[0, 1, 0, 1]))
    assert result["value"] == 0.0 and result["ratio"] is None


def test_consistency_hand_case():
    # class 0: (0,0), (2,0) -> centroid (1,0), S0 = 1; class 1: (10,0), (10,4) -> (10,2), S1 = 2;
    # class 2: one sample (0,8) -> S2 = 0. M01 = sqrt(85), M02 = sqrt(65), M12 = sqrt(136).
    # R01 = 3/sqrt85 = .325, R02 = 1/sqrt65 = .124, R12 = 2/sqrt136 = .171
    # max per class: 0 -> R01, 1 -> R01, 2 -> R12;  C = (2*3/sqrt85 + 2/sqrt136) / 3
    f = np.array([[0, 0], [2, 0], [10, 0], [10, 4], [0, 8]], float)
    result = consistency(featureset(f, labels=[0, 0, 1, 1, 2]))
    assert result["value"] == pytest.approx((6 / math.sqrt(85) + 2 / math.sqrt(136)) / 3)
    assert result["classes"] == 3 and result["coincident_pairs"] == 0


def test_consistency_coincident_centroids_and_single_class():
    # both centroids at (1, 0): the classes cannot be told apart, C is infinite -> None, one coincident pair
    f = np.array([[0, 0], [2, 0], [1, 1], [1, -1]], float)
    assert consistency(featureset(f, labels=[0, 0, 1, 1])) == {"value": None, "classes": 2, "coincident_pairs": 1}
    assert consistency(featureset(f, labels=[4, 4, 4, 4]))["value"] is None


@pytest.mark.parametrize("seed", range(4))
def test_consistency_spreads_bit_for_bit_as_the_plain_formula(seed):
    """The spreads (formed in place) are np.linalg.norm(values - centroids[class], axis=1) summed per class,
    bit for bit, so C is exactly the plain formula's."""
    f, _, _, labels = random_problem(n=300, d=17, k=4, seed=seed)
    values = f.astype(np.float64)
    groups = Classes.of(labels)
    centroids = groups.means(values)
    spread = groups.sums(np.linalg.norm(values - centroids[groups.index], axis=1)[:, None])[:, 0] / groups.counts
    dist = np.stack([np.linalg.norm(centroids - c, axis=1) for c in centroids])
    with np.errstate(divide="ignore"):  # each centroid's distance to itself
        ratio = (spread[:, None] + spread[None, :]) / dist
    np.fill_diagonal(ratio, -np.inf)
    assert consistency(featureset(f, labels=labels))["value"] == float(ratio.max(axis=1).mean())


def test_magnitude_hand_case():
    # ||(1,2)||^2/2 = 2.5, ||(3,0)||^2/2 = 4.5 -> 3.5
    assert magnitude(featureset(np.array([[1, 2], [3, 0]], float)))["value"] == pytest.approx(3.5)


def test_magnitude_conv_uses_every_element():
    # D = 2 channels x 2 x 2 = 8 elements. sample 0: channel 0 all ones -> 4/8 = 0.5;
    # sample 1: channel 0 row 0 = (2, 2) -> 8/8 = 1.0.   mean 0.75 (spatial means would give a different number)
    f = np.zeros((2, 2, 2, 2))
    f[0, 0] = 1.0
    f[1, 0, 0] = 2.0
    assert magnitude(featureset(f))["value"] == pytest.approx(0.75)


def test_perplexity_hand_case():
    # class 0 (4 samples): patterns A, A, B, C -> counts 2,1,1 -> H = 1.5 ln 2 -> P = 2^1.5 = 2.828, /4 = 0.7071
    # class 1 (2 samples): one shared pattern -> P = 1, /2 = 0.5.   value = (0.7071 + 0.5) / 2
    f = np.array([[1, 0], [2, 0], [0, 3], [1, 1], [0, 0], [0, 0]], float)
    result = perplexity(featureset(f, labels=[0, 0, 0, 0, 1, 1]))
    assert result["perplexity"] == pytest.approx([2**1.5, 1.0])
    assert result["per_class"] == pytest.approx([2**1.5 / 4, 0.5])
    assert result["value"] == pytest.approx((2**1.5 / 4 + 0.5) / 2)
    assert result["classes"] == [0, 1] and result["samples"] == [4, 2]


def test_perplexity_extremes():
    eye = np.eye(4)                                    # every sample its own pattern -> 1
    assert perplexity(featureset(eye, labels=[0, 0, 0, 0]))["value"] == pytest.approx(1.0)
    assert perplexity(featureset(np.ones((4, 4)), labels=[0, 0, 0, 0]))["value"] == pytest.approx(0.25)


def test_nodes_as_classifiers_hand_case():
    # states (unit0, unit1): c0: (1,0), (1,1); c1: (0,1), (0,0).
    # unit 0: on = {c0: 2, c1: 0} -> P(c|on) = (3/4, 1/4), P(c|off) = (1/4, 3/4): decides every sample
    # unit 1: on = {1, 1}, off = {1, 1} -> P(c|s) = 1/2 = prior: adds 0.   combined accuracy 1
    # single nodes: unit 0 (2 + 2)/4 = 1, unit 1 (1 + 1)/4 = 0.5 -> mean 0.75; majority 0.5
    f = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], float)
    result = nodes_as_classifiers(featureset(f, labels=[0, 0, 1, 1]))
    assert result["accuracy"] == pytest.approx(1.0) and result["mean_node_accuracy"] == pytest.approx(0.75)
    assert result["majority"] == pytest.approx(0.5) and result["per_unit"] == pytest.approx([1.0, 0.5])


def test_nodes_as_classifiers_ties_share_credit():
    # dead layer, balanced classes: every class scores the prior, each sample gets 1/2 credit
    result = nodes_as_classifiers(featureset(np.zeros((4, 3)), labels=[0, 1, 0, 1]))
    assert result["accuracy"] == pytest.approx(0.5) and result["mean_node_accuracy"] == pytest.approx(0.5)


def test_nodes_as_classifiers_matches_a_plain_naive_bayes():
    f, _, _, labels = random_problem(n=60, d=6, k=3, seed=4)
    on, classes = f > 0, np.unique(labels)
    prior = np.array([np.mean(labels == c) for c in classes])
    score = np.tile(np.log(prior), (len(f), 1))
    for n in range(f.shape[1]):
        for i in range(len(f)):
            same = on[:, n] == on[i, n]
            post = np.array([(np.sum(same & (labels == c)) + 1) / (same.sum() + len(classes)) for c in classes])
            score[i] += np.log(post) - np.log(prior)
    expected = np.mean(classes[score.argmax(1)] == labels)
    assert nodes_as_classifiers(featureset(f, labels=labels))["accuracy"] == pytest.approx(expected)


def test_mi_selectivity_hand_case():
    # unit 0 (0,0 | 5,5): median 2.5, state = class -> I = ln 2 = H(C) -> 1
    # unit 1 (0,5 | 0,5): state independent of class -> 0;  unit 2 constant: always off -> 0
    f = np.array([[0, 0, 3], [0, 5, 3], [5, 0, 3], [5, 5, 3]], float)
    result = mi_selectivity(featureset(f, labels=[0, 0, 1, 1]))
    assert result["per_unit"] == pytest.approx([1.0, 0.0, 0.0])
    assert result["mean"] == pytest.approx(1 / 3) and result["median"] == pytest.approx(0.0)
    # four classes, a perfect half split: I = ln 2, H(C) = ln 4 -> 0.5 (the binary ceiling)
    assert mi_selectivity(featureset(f[:, :1], labels=[0, 1, 2, 3]))["per_unit"] == pytest.approx([0.5])
    # (0,1,2 | 3), classes (0,0,0,1): median 1.5 -> on (F,F,T,T); p(c0,off)=.5, p(c0,on)=.25, p(c1,on)=.25
    # H(C) = -(.75 ln .75 + .25 ln .25), H(S) = ln 2, H(C,S) = 1.5 ln 2
    h_c = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (h_c + math.log(2) - 1.5 * math.log(2)) / h_c
    values = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert mi_selectivity(featureset(values, labels=[0, 0, 0, 1]))["per_unit"] == pytest.approx([expected])


def two_unit_problem():
    # class 0 needs unit 0, class 1 needs unit 1; bias favours class 0 (as in test_diagnostics)
    f = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 3.0]], np.float32)
    head = linear_head(np.eye(2, dtype=np.float32), np.array([0.1, 0.0], np.float32))
    return head, featureset(f, head, labels=[0, 1, 0, 1])


def test_single_unit_importance_hand_case():
    # clean: all 4 right. unit 0 zeroed: (3,1) -> logits (.1, 1) -> wrong: 3/4 -> 0.25.
    # unit 1 zeroed: (0,2) and (1,3) -> class 0, wrong: 2/4 -> 0.5
    head, fs = two_unit_problem()
    assert single_unit_importance(head, fs) == pytest.approx([0.25, 0.5])


def test_selectivity_ordered_ablation_hand_case():
    head, fs = two_unit_problem()
    result = selectivity_ordered_ablation(head, fs, np.array([0.9, 0.1]), levels=3)
    # most selective first = unit 0: [1, .75, .5] -> auc .5*(1.75/2) + .5*(1.25/2) = 0.75
    assert result["most_selective_first"]["curve"]["accuracy"] == pytest.approx([1.0, 0.75, 0.5])
    assert result["most_selective_first"]["auc"] == pytest.approx(0.75)
    # least selective first = unit 1: [1, .5, .5] -> 0.625
    assert result["least_selective_first"]["auc"] == pytest.approx(0.625)
    assert set(result["least_selective_first"]) == {"auc", "curve"}


def test_importance_correlation_hand_case():
    # ranks of importance (1,2,4,3): d = (0,0,-1,1), rho = 1 - 6*2/(4*15) = 0.8
    result = importance_correlation(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 40, 30]))
    assert result["spearman"] == pytest.approx(0.8) and 0 < result["p_value"] <= 1
    assert importance_correlation(np.array([1.0, 2, 3]), np.zeros(3)) == {"spearman": None, "p_value": None}


# ---------------------------------------------------------------- invariances

def test_permuting_units_changes_no_aggregate():
    f, w, b, labels = random_problem()
    perm = np.random.default_rng(1).permutation(f.shape[1])
    fs, fs_p = featureset(f, labels=labels), featureset(f[:, perm], labels=labels)
    assert label_only(fs_p) == pytest.approx(label_only(fs))
    assert sorted(steadiness(fs_p)["per_unit"]) == pytest.approx(sorted(steadiness(fs)["per_unit"]))
    head, head_p = linear_head(w, b), linear_head(w[perm], b)
    imp = single_unit_importance(head, featureset(f, head, labels))
    imp_p = single_unit_importance(head_p, featureset(f[:, perm], head_p, labels))
    assert imp_p == pytest.approx(imp[perm])
    si = np.asarray(mi_selectivity(fs)["per_unit"])
    assert importance_correlation(si[perm], imp_p) == pytest.approx(importance_correlation(si, imp))


def test_renaming_classes_changes_nothing():
    f, w, b, labels = random_problem()
    rename = np.array([7, 3, 5])                                 # any bijection, not even 0..K-1
    assert label_only(featureset(f, labels=rename[labels])) == pytest.approx(label_only(featureset(f, labels=labels)))
    # head-based: permute the class ids and the head's outputs alike
    pi = np.array([2, 0, 1])
    head, head_pi = linear_head(w, b), linear_head(w[:, np.argsort(pi)], b[np.argsort(pi)])
    imp = single_unit_importance(head, featureset(f, head, labels))
    assert single_unit_importance(head_pi, featureset(f, head_pi, pi[labels])) == pytest.approx(imp)


def test_scaling_features():
    f, _, _, labels = random_problem()
    k = 2.5
    base, scaled = label_only(featureset(f, labels=labels)), label_only(featureset(f * k, labels=labels))
    for key in ("steadiness_ratio", "consistency", "perplexity", "nodes_accuracy", "node_accuracy",
                "mi_mean", "mi_median"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-6), key
    assert scaled["magnitude"] == pytest.approx(k**2 * base["magnitude"], rel=1e-6)
    assert scaled["steadiness_value"] == pytest.approx(k**2 * base["steadiness_value"], rel=1e-6)


# ---------------------------------------------------------------- conv layers: a unit is a channel

def test_conv_units_are_channel_means():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 48)
    f = np.maximum(rng.normal(size=(48, 4, 3, 3)) + labels[:, None, None, None] * 0.3, 0).astype(np.float32)
    conv, means = featureset(f, labels=labels), featureset(f.mean(axis=(2, 3)), labels=labels)
    # every diagnostic but magnitude reads one value per channel (its spatial mean)
    expected = label_only(means)
    expected["magnitude"] = float(np.mean(f.astype(np.float64) ** 2))       # magnitude: every element
    assert label_only(conv) == pytest.approx(expected)
    # a ReLU channel is "on" when any position is on
    g = np.zeros((2, 1, 2, 2), np.float32)
    g[0, 0, 1, 1] = 0.5
    assert perplexity(featureset(g, labels=[0, 0]))["perplexity"] == pytest.approx([2.0])


def test_conv_single_unit_importance_zeroes_the_whole_channel():
    rng = np.random.default_rng(0)
    f = np.abs(rng.normal(size=(30, 3, 2, 2))).astype(np.float32)
    head = linear_head(rng.normal(size=(12, 3)).astype(np.float32), np.zeros(3, np.float32))
    fs = featureset(f, head, labels=rng.integers(0, 3, 30))
    imp = single_unit_importance(head, fs)
    for j in range(3):
        g = f.copy()
        g[:, j] = 0
        assert imp[j] == pytest.approx(fs.clean_accuracy - np.mean(head(g).argmax(1) == fs.labels))
    result = selectivity_ordered_ablation(head, fs, np.array([0.2, 0.7, 0.1]), levels=4)
    assert result["most_selective_first"]["curve"]["accuracy"][0] == pytest.approx(fs.clean_accuracy)


def test_importance_correlation_agrees_with_scipy_on_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    si, imp = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 40).astype(float)
    assert importance_correlation(si, imp)["spearman"] == pytest.approx(spearmanr(si, imp)[0])
