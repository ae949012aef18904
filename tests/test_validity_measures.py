"""The validity measures (neighbour-vote agreement, normalized margins) on hand-computed cases, plus properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genaudit.diagnostics.margins import feature_spread, margins, sample_margins
from genaudit.diagnostics.neighbours import (
    agreement_parts,
    carried_agreement,
    extrapolate,
    nearest_neighbours,
    neighbour_agreement,
    neighbour_vote,
    vote_curve,
)


def brute_force_vote(x, reference, k):
    """Reference implementation: full sort by (distance, index), then the documented tie rules."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    out = []
    for i in range(n):
        d = ((x - x[i]) ** 2).sum(axis=1)
        order = [j for j in np.lexsort((np.arange(n), d)) if j != i][:k]
        counts = {}
        for j in order:
            counts[reference[j]] = counts.get(reference[j], 0) + 1
        best = max(counts.values())
        tied = [c for c, v in counts.items() if v == best]
        nearest = {c: min(d[j] for j in order if reference[j] == c) for c in tied}
        out.append(min(tied, key=lambda c: (nearest[c], c)))
    return np.array(out)


# ------------------------------------------------------------------------------------------ neighbours


def test_vote_hand_case_one_neighbour():
    # points on a line: 0, 1, 3, 10, 11; 1-NN leave-one-out: 0->1, 1->0, 3->1, 10->11, 11->10
    x = np.array([[0.0], [1.0], [3.0], [10.0], [11.0]])
    ref = np.array([0, 0, 1, 1, 1])
    np.testing.assert_array_equal(neighbour_vote(x, ref, k=1), [0, 0, 0, 1, 1])
    out = neighbour_agreement(x, ref, np.array([0, 0, 1, 1, 0]), k=1)
    assert out["value"] == pytest.approx(3 / 5)
    assert out["reference_agreement"] == pytest.approx(4 / 5)
    assert out == {**out, "k": 1, "space": "input", "samples": 5}
    # vote consistency at k=1: label of the nearest vs the second nearest neighbour.
    # 0: 1 (class 0) vs 3 (1) no; 1: 0 (0) vs 3 (1) no; 3: 1 (0) vs 0 (0) yes; 10: 11 vs 3 yes; 11: 10 vs 3 yes
    assert out["vote_consistency"] == pytest.approx(3 / 5)


def test_equal_distances_take_the_lower_index():
    # sample 0 has two neighbours at distance 1: index 1 (class 1) wins over index 2 (class 2)
    x = np.array([[0.0], [1.0], [-1.0]])
    np.testing.assert_array_equal(neighbour_vote(x, np.array([0, 1, 2]), k=1), [1, 0, 0])


def test_vote_ties_go_to_the_class_of_the_nearest_neighbour():
    # k=2. sample 0 (x=0): neighbours x=1 (class 2, d^2=1) and x=-2 (class 1, d^2=4): 1-1 tie -> class 2, the
    # nearer one (not the smaller class 1). sample 1 (x=1): x=0 (class 0, 1), x=-2 (class 1, 9) -> 0.
    # sample 2 (x=-2): x=0 (class 0, 4), x=1 (class 2, 9) -> 0. sample 3 (x=5): x=1 (class 2, 16), x=0 (0, 25) -> 2
    x = np.array([[0.0], [1.0], [-2.0], [5.0]])
    ref = np.array([0, 2, 1, 1])
    np.testing.assert_array_equal(neighbour_vote(x, ref, k=2), [2, 0, 0, 2])


def test_vote_ties_at_equal_distance_go_to_the_smaller_class():
    x = np.array([[0.0], [1.0], [-1.0]])  # sample 0: classes 2 and 1, both at distance 1 -> 1
    assert neighbour_vote(x, np.array([0, 2, 1]), k=2)[0] == 1


def test_majority_and_duplicates():
    # duplicates are neighbours (leave-one-out removes the sample itself, by index, not by distance 0)
    x = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0], [6.0, 5.0]])
    ref = np.array([3, 7, 7, 7, 3, 3])
    # sample 0: neighbours 1 (7), 2 (7) -> 7; sample 1: 0 (3), 2 (7) tie, nearest is 3 (d=0) -> 3
    # sample 2: 0 (3, d=1), 1 (7, d=1): tie at equal distance -> the smaller class 3
    # sample 3: 4 (3), 5 (3) -> 3; sample 4: 3 (7, d=1), 5 (3, d=2) tie -> 7; sample 5: 3 (7, 1), 4 (3, 2) -> 7
    np.testing.assert_array_equal(neighbour_vote(x, ref, k=2), [7, 3, 3, 3, 7, 7])


def test_k_is_capped_and_validated():
    x = np.array([[0.0], [1.0], [2.0]])
    out = neighbour_agreement(x, np.array([0, 1, 1]), np.array([1, 1, 1]), k=10)
    assert out["k"] == 2
    with pytest.raises(ValueError):
        neighbour_vote(x, np.array([0, 1]), k=1)
    with pytest.raises(ValueError):
        neighbour_vote(x[:1], np.array([0]), k=1)


def test_chunked_equals_brute_force_and_one_block():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(157, 4)).astype(np.float64)  # small integer grid: many exact distance ties
    ref = rng.integers(0, 4, size=157)
    expected = brute_force_vote(x, ref, 5)
    np.testing.assert_array_equal(neighbour_vote(x, ref, k=5), expected)
    np.testing.assert_array_equal(neighbour_vote(x, ref, k=5, max_block=157 * 3), expected)  # 3-row chunks
    np.testing.assert_array_equal(neighbour_vote(x, ref, k=5, max_block=1), expected)        # 1-row chunks


def test_precomputed_neighbours_give_the_same_vote_for_every_k():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(120, 3)).astype(np.float64)  # many ties
    ref = rng.integers(0, 3, size=120)
    pred = rng.integers(0, 3, size=120)
    nn = nearest_neighbours(x, 20)
    for k in (1, 5, 10, 20):
        assert neighbour_agreement(None, ref, pred, k, neighbours=nn) == neighbour_agreement(x, ref, pred, k)
        np.testing.assert_array_equal(neighbour_vote(x, ref, k), brute_force_vote(x, ref, k))
    with pytest.raises(ValueError):
        neighbour_agreement(None, ref, pred, 30, neighbours=nn)
    # vote consistency at k=10 is the agreement of the votes of ranks 1,3,..,19 and 2,4,..,20
    from genaudit.diagnostics.neighbours import vote_of

    odd, even = vote_of(nn[0][:, 0::2], nn[1][:, 0::2], ref), vote_of(nn[0][:, 1::2], nn[1][:, 1::2], ref)
    assert neighbour_agreement(x, ref, pred, 10)["vote_consistency"] == np.mean(odd == even)


def test_properties_permutations_and_the_vote_itself():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))  # continuous: no distance ties, so sample order cannot matter
    ref = rng.integers(0, 5, size=300)
    pred = np.where(rng.random(300) < 0.7, ref, rng.integers(0, 5, size=300))
    base = neighbour_agreement(x, ref, pred, k=7)
    p = rng.permutation(300)
    assert neighbour_agreement(x[p], ref[p], pred[p], k=7)["value"] == base["value"]
    assert neighbour_agreement(x[:, rng.permutation(6)], ref, pred, k=7)["value"] == base["value"]
    relabel = rng.permutation(5)  # renaming the classes consistently changes nothing
    assert neighbour_agreement(x, relabel[ref], relabel[pred], k=7)["value"] == base["value"]
    vote = neighbour_vote(x, ref, k=7)
    assert neighbour_agreement(x, ref, vote, k=7)["value"] == 1.0  # a model predicting the vote scores 1
    assert neighbour_agreement(x, vote, vote, k=7)["value"] == neighbour_agreement(x, vote, vote, k=7)["reference_agreement"]
    # vote consistency: 1 when every label agrees (one class), about 1/C for labels independent of x
    assert neighbour_agreement(x, np.zeros(300, int), pred, k=7)["vote_consistency"] == 1.0
    assert abs(base["vote_consistency"] - 1 / 5) < 0.1


def test_memory_is_bounded_for_10000_samples():
    import tracemalloc

    rng = np.random.default_rng(2)
    x = rng.random((10_000, 8)).astype(np.float32)
    ref = rng.integers(0, 10, size=10_000)
    tracemalloc.start()
    try:
        out = neighbour_agreement(x, ref, ref, k=10)  # chunks of 400 rows x 10,000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out["samples"] == 10_000 and 0.0 <= out["value"] <= 1.0
    assert peak < 250e6  # a full 10,000 x 10,000 float64 distance matrix alone would be 800 MB


# ------------------------------------------------------------------------------------------ margins


def hand_problem():
    # w_0 = (1, 0), w_1 = (0, 1), w_2 = (0, 0) as the columns of W (D=2 x C=3), b = 0
    w = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b = np.zeros(3)
    h = np.array([[2.0, 1.0], [0.0, 3.0], [2.0, 1.0], [0.0, 3.0]])
    y = np.array([0, 0, 1, 1])
    return h, w, b, y


def test_margins_hand_case():
    h, w, b, y = hand_problem()
    r2 = math.sqrt(2)
    # sample 0: z=(2,1,0), y=0: j=1 (2-1)/|w0-w1|=1/sqrt2, j=2 (2-0)/|w0|=2 -> 1/sqrt2
    # sample 1: z=(0,3,0), y=0: j=1 -3/sqrt2, j=2 0 -> -3/sqrt2
    # sample 2: z=(2,1,0), y=1: j=0 -1/sqrt2, j=2 1 -> -1/sqrt2
    # sample 3: z=(0,3,0), y=1: j=0 3/sqrt2, j=2 3 -> 3/sqrt2
    np.testing.assert_allclose(sample_margins(h, w, b, y), [1 / r2, -3 / r2, -1 / r2, 3 / r2])
    # total variance: Var(2,0,2,0) + Var(1,3,1,3) = 1 + 1 -> spread sqrt2; normalized: 1/2, -3/2, -1/2, 3/2
    assert feature_spread(h) == pytest.approx(r2)
    out = margins(h, w, b, y)
    assert out["negative_fraction"] == 0.5 and out["positive_fraction"] == 0.5 and out["samples"] == 4
    lo, hi = math.log(0.5), math.log(1.5)  # numpy's linear quantiles of two values
    q1, q2, q3 = lo + 0.25 * (hi - lo), (lo + hi) / 2, lo + 0.75 * (hi - lo)
    assert out["log_q1"] == pytest.approx(q1) and out["log_q2"] == pytest.approx(q2)
    assert out["log_q3"] == pytest.approx(q3)
    assert out["log_lower_fence"] == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert out["log_upper_fence"] == pytest.approx(q3 + 1.5 * (q3 - q1))


def test_margins_without_positive_margins_or_spread():
    h, w, b, _ = hand_problem()
    out = margins(h[[1, 2]], w, b, np.array([0, 1]))  # both negative
    assert out["negative_fraction"] == 1.0 and out["log_q2"] is None
    out = margins(np.ones((3, 2)), w, b, np.array([0, 0, 0]))  # constant features: no spread
    assert out["normalizer"] == 0.0 and out["log_q1"] is None


def test_margin_properties_scale_units_and_predictions():
    rng = np.random.default_rng(3)
    h = np.maximum(rng.normal(size=(200, 16)), 0)
    w = rng.normal(size=(16, 5))
    b = rng.normal(size=5)
    y = rng.integers(0, 5, size=200)
    base = margins(h, w, b, y)
    # rescaling the features and inversely the weights keeps the logits: normalized margins unchanged
    scaled = margins(h * 7.0, w / 7.0, b, y)
    perm = rng.permutation(16)  # permuting the units (and W's rows) changes nothing
    permuted = margins(h[:, perm], w[perm], b, y)
    order = rng.permutation(200)  # nor does the order of the samples
    shuffled = margins(h[order], w, b, y[order])
    for other in (scaled, permuted, shuffled):
        for key, value in base.items():
            if key != "normalizer":
                assert other[key] == pytest.approx(value)
    # with the head's own predictions as reference no margin is negative (argmax), and the negative fraction
    # with labels is 1 - accuracy when there are no ties
    pred = (h @ w + b).argmax(axis=1)
    assert margins(h, w, b, pred)["negative_fraction"] == 0.0
    assert base["negative_fraction"] == pytest.approx(1 - np.mean(pred == y))


# ----------------------------------------------------------------------------- the vote at the training set's size


def test_extrapolate_hand_case():
    """Disagreements 0.2, 0.16, 0.128, 0.1024 at 250..2,000 voters shrink by 0.8 per doubling (b = log2 0.8): two
    more doublings to 8,000 give 0.1024 * 0.64 = 0.065536."""
    points = [(250, 0.8), (500, 0.84), (1000, 0.872), (2000, 0.8976)]
    value, b = extrapolate(points, 8000)
    assert b == pytest.approx(math.log2(0.8))
    assert value == pytest.approx(1 - 0.065536)


def test_extrapolate_needs_more_voters_and_never_makes_the_vote_worse():
    points = [(250, 0.8), (500, 0.84), (1000, 0.872), (2000, 0.8976)]
    assert extrapolate(points, 2000) == (0.8976, 0.0)  # the training set is no larger than the vote: as measured
    assert extrapolate(points, 1500) == (0.8976, 0.0)
    worse = [(250, 0.9), (500, 0.85), (1000, 0.8)]  # a vote that got worse with more voters: held, not extrapolated
    assert extrapolate(worse, 10_000) == (0.8, 0.0)
    # at most 100 times the voters, and never faster than 1/m
    assert extrapolate(points, 10**9)[0] == pytest.approx(extrapolate(points, 200_000)[0])
    steep = [(100, 0.0), (200, 0.9)]  # 1.0 -> 0.1 disagreement would be b = -3.3: clipped to -1
    assert extrapolate(steep, 400) == (pytest.approx(0.95), -1.0)


@given(st.lists(st.tuples(st.integers(2, 5000), st.floats(0, 1)), min_size=1, max_size=5, unique_by=lambda p: p[0]),
       st.integers(1, 10**6))
@settings(max_examples=200, deadline=None)
def test_extrapolated_agreement_lies_between_the_measured_one_and_one(points, size):
    value, b = extrapolate(points, size)
    a_n = max(points)[1]
    assert -1.0 <= b <= 0.0
    assert a_n - 1e-12 <= value <= 1.0


def test_agreement_parts_hand_case():
    """Six samples; the model predicts the label on the first four (fitted 4/6), the vote agrees with the label on
    three of those (3/4); on the other two the vote is the model's prediction once (1/2)."""
    reference = np.array([0, 1, 2, 0, 1, 2])
    predictions = np.array([0, 1, 2, 0, 2, 0])
    vote = np.array([0, 1, 2, 1, 2, 1])
    parts = agreement_parts(vote, reference, predictions)
    assert parts == {"value": 4 / 6, "reference_agreement": 3 / 6, "fitted": 4 / 6, "fitted_agreement": 3 / 4,
                     "unfitted_agreement": 1 / 2}
    assert parts["value"] == pytest.approx(parts["fitted"] * parts["fitted_agreement"]
                                           + (1 - parts["fitted"]) * parts["unfitted_agreement"])
    assert agreement_parts(vote, reference, reference)["unfitted_agreement"] is None  # fits every label


def _point(voters, fitted, fitted_agreement, unfitted_agreement):
    value = fitted * fitted_agreement + (1 - fitted) * unfitted_agreement
    return {"voters": voters, "value": value, "reference_agreement": 0.0, "fitted": fitted,
            "fitted_agreement": fitted_agreement, "unfitted_agreement": unfitted_agreement}


def test_carried_agreement_hand_case_keeps_an_underfit_models_own_errors():
    """A model that fits 90% of its labels: on those the vote's disagreement halves per 4x voters (0.08, 0.04 at
    500, 2,000: b = -1/2), on the rest the vote never sides with the model (0 at every size). Carried to 32,000
    (16x: disagreement / 4) the fitted part is 1 - 0.01 = 0.99 and the unfitted part stays 0, so 0.9 * 0.99 =
    0.891. Carried whole, the disagreement 0.172 -> 0.136 per 4x voters is carried two more such steps,
    1 - 0.136 (0.136 / 0.172)^2 = 0.915: the model is credited with the vote's gains on its own errors."""
    curve = [_point(500, 0.9, 0.92, 0.0), _point(2000, 0.9, 0.96, 0.0)]
    value, f_exponent, u_exponent = carried_agreement(curve, 32_000)
    assert f_exponent == pytest.approx(-0.5) and u_exponent == 0.0
    assert value == pytest.approx(0.9 * 0.99)
    whole, _ = extrapolate([(p["voters"], p["value"]) for p in curve], 32_000)
    assert whole == pytest.approx(1 - 0.136 * (0.136 / 0.172) ** 2)


@given(st.lists(st.tuples(st.floats(0.01, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=4),
       st.integers(1, 10**6))
@settings(max_examples=200, deadline=None)
def test_carried_agreement_is_the_measured_value_at_its_size_and_never_below_it(parts, size):
    curve = [_point(250 * 2**i, *p) for i, p in enumerate(parts)]
    value, _, _ = carried_agreement(curve, size)
    measured = curve[-1]
    if size <= measured["voters"]:
        assert value == measured["value"]
    assert measured["value"] - 1e-9 <= value <= 1.0 + 1e-12
    # a model that fits every label: the carry is its fitted part's, which is the labels' agreement's
    fitting = [_point(p["voters"], 1.0, p["fitted_agreement"], 0.0) for p in curve]
    assert carried_agreement(fitting, size)[0] == pytest.approx(
        extrapolate([(p["voters"], p["fitted_agreement"]) for p in fitting], size)[0])


def test_vote_curve_sizes_and_model_free_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) + np.repeat(np.eye(4, 5) * 3, 100, axis=0)
    y = np.repeat(np.arange(4), 100)
    pred = y.copy()
    pred[::7] = (pred[::7] + 1) % 4
    curve = vote_curve(x, y, pred, 10, seed=0, strata=y)
    assert [p["voters"] for p in curve] == [50, 100, 200]  # 400/8 and up; none of at most 2k = 20 voters
    assert [p["reference_agreement"] for p in vote_curve(x, y, y, 10, seed=0, strata=y)] == \
        [p["reference_agreement"] for p in curve]  # the reference column does not read the model
    for p in vote_curve(x, y, y, 10, seed=0, strata=y):
        assert p["value"] == p["reference_agreement"]  # a model that predicts its labels agrees as they do
    small = vote_curve(x[:100], y[:100], pred[:100], 10, seed=0)
    assert [p["voters"] for p in small] == [25, 50]


def test_scorecard_carries_the_vote_at_the_training_sets_size():
    import genaudit

    model = Path(__file__).resolve().parents[1] / "sample_models" / "mlp_clean.onnx"
    whole = genaudit.audit(model, "sample", samples=None, seed=0)  # 1,000 samples: all of the sample data
    vote = whole["diagnostics"]["neighbours"]["input"]
    assert vote["at_training_size"]["size"] == 1000 and vote["at_training_size"]["value"] == vote["value"]
    part = genaudit.audit(model, "sample", samples=500, seed=0)
    vote = part["diagnostics"]["neighbours"]["input"]
    at = vote["at_training_size"]
    assert at["size"] == 1000 and [p["voters"] for p in at["curve"]] == [62, 125, 250]
    assert at["value"] >= vote["value"] and at["reference_agreement"] >= vote["reference_agreement"]
    points = [(p["voters"], p["value"]) for p in at["curve"]] + [(500, vote["value"])]
    assert at["value"] == pytest.approx(extrapolate(points, 1000)[0], abs=1e-6)
    assert vote["value"] <= at["value_by_part"] <= 1.0
    assert all(p["value"] == pytest.approx(p["fitted"] * p["fitted_agreement"] + (1 - p["fitted"])
                                           * (p["unfitted_agreement"] or 0.0)) for p in at["curve"])
    told = genaudit.audit(model, "sample", samples=None, seed=0, train_size=10_000)  # the sample is 1/10 of it
    vote = told["diagnostics"]["neighbours"]["input"]
    assert told["data"]["train_size"] == 10_000 and vote["at_training_size"]["size"] == 10_000
    assert vote["at_training_size"]["value"] > vote["value"]
    assert "carried from its 1000 voters to the 10000 training images" in told["estimate"]["basis"]
    assert told["estimate"]["accuracy"] > whole["estimate"]["accuracy"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_every_report_says_how_many_images_the_model_trained_on_and_when_that_is_assumed(fmt):
    import genaudit
    from genaudit.render import renderer_class

    def text(card) -> str:  # the terminal panel wraps lines inside its box
        return " ".join(renderer_class(fmt).text("report", card).replace("│", " ").split())

    model = Path(__file__).resolve().parents[1] / "sample_models" / "mlp_clean.onnx"
    told = genaudit.audit(model, "sample", samples=300, seed=0, train_size=10_000)
    assert "300 samples of 10000 trained on" in text(told) and told["data"]["train_size_given"]
    # not told: the data's 1,000 images are taken as the training set, and a labelled report says so
    assumed = genaudit.audit(model, "sample", samples=300, seed=0)
    assert not assumed["data"]["train_size_given"] and assumed["data"]["train_size"] == 1000
    assert "300 samples of 1000, all it trained on unless --train-size says more" in text(assumed)
    every = genaudit.audit(model, "sample", samples=None, seed=0)
    assert "1000 samples, all it trained on unless --train-size says more" in text(every)
    # told exactly the data's size, or no estimate to carry (no labels): nothing to add
    assert "trained on" not in text(genaudit.audit(model, "sample", samples=300, seed=0, train_size=1000))
    assert "trained on" not in text(genaudit.audit(model, "sample", samples=300, seed=0, labels=False))
