"""The estimate of held-out accuracy and the neighbour-vote and margin diagnostics it rests on, in the audit."""

from __future__ import annotations

import numpy as np
import pytest

import genaudit
from conftest import SAMPLE_MODELS
from genaudit import estimate as estimate_module
from genaudit.features import flat_pooled
from genaudit.models import identify, open_model
from genaudit.render import verdict

SPEC = {
    "version": 9, "fitted_on": {"models": 3, "datasets": ["d"], "archs": ["a"]}, "requires": {"samples": 100},
    "terms": {"u": {"paths": ["diagnostics.u.value"]},
              "d": {"paths": ["clean_accuracy", "-diagnostics.neighbours.input.value"]}},
    "intercept": 0.02, "coefficients": {"u": 0.5, "d": 0.25},
    "conformal": {"quantile_90": 0.5, "scale_floor": 0.03}, "range": {"u": [0.0, 0.4], "d": [0.0, 1.0]},
}


def _card(u: float, train: float = 0.9, vote: float = 0.7, samples: int = 100, label_mode: str = "labels") -> dict:
    return {"diagnostics": {"u": {"value": u}, "neighbours": {"input": {"value": vote, "samples": 50}}},
            "clean_accuracy": train, "samples": samples, "label_mode": label_mode}


def test_estimate_is_training_accuracy_minus_the_fitted_gap_with_a_scaled_interval(monkeypatch):
    monkeypatch.setattr(estimate_module, "model", lambda: SPEC)
    block = estimate_module.estimate(_card(0.2))
    gap = 0.02 + 0.5 * 0.2 + 0.25 * (0.9 - 0.7)  # 0.17
    assert block["gap"] == pytest.approx(gap)
    assert block["accuracy"] == pytest.approx(0.9 - gap)
    half = 0.5 * (0.03 + gap)  # wider for a larger predicted gap
    assert block["interval"] == pytest.approx([0.9 - gap - half, 0.9 - gap + half])
    assert "widened" not in block["basis"] and block["level"] == 0.9
    assert "training accuracy 0.900 minus a predicted generalization gap of +0.170" in block["basis"]


def test_a_model_the_vote_cannot_certify_is_not_capped_at_the_votes_accuracy(monkeypatch):
    """A model with no predicted gap keeps its training accuracy, whatever the vote's own accuracy."""
    spec = SPEC | {"intercept": 0.0, "coefficients": {"u": 1.0, "d": 0.0}}
    monkeypatch.setattr(estimate_module, "model", lambda: spec)
    assert estimate_module.estimate(_card(0.0, train=0.99, vote=0.3))["accuracy"] == pytest.approx(0.99)


def test_standard_error_counts_each_share_over_its_own_samples():
    """Hand-computed delta method: estimate = t - (b + c_u u + c_d (t - v)); clean accuracy t is a share of all
    10,000 audited samples (gradient 1 - c_d), the vote v a share of its 2,000 voters (gradient c_d); a non-share
    input (u) counts as exact."""
    card = {"samples": 10_000, "clean_accuracy": 0.9, "diagnostics": {
        "neighbours": {"input": {"value": 0.8, "samples": 2000}}, "u": {"value": 7.0}}}
    expected = np.hypot(0.25 * np.sqrt(0.8 * 0.2 / 2000), 0.75 * np.sqrt(0.9 * 0.1 / 10_000))
    assert estimate_module.standard_error(card, SPEC) == pytest.approx(expected)


def test_interval_widens_outside_the_zoo_and_says_why(monkeypatch):
    monkeypatch.setattr(estimate_module, "model", lambda: SPEC)
    block = estimate_module.estimate(_card(0.6, samples=50))  # u is 0.2 above the zoos' range
    gap = 0.02 + 0.5 * 0.6 + 0.25 * 0.2
    half = 0.5 * (0.03 + gap) + 0.5 * 0.2
    assert block["interval"] == pytest.approx([0.9 - gap - half, min(0.9 - gap + half, 1.0)])
    assert "u = 0.600 outside the zoos' [0.000, 0.400]" in block["basis"] and "50" in block["basis"]


def test_an_unreliable_pixel_reference_gets_the_absolute_floor_and_says_so(monkeypatch):
    """Where two disjoint pixel votes agree on fewer than half the samples, the half-width is at least the floor
    (hand case: normalized half 0.5 * (0.03 + 0.17) = 0.1 < floor 0.3); a reliable reference keeps 0.1."""
    spec = SPEC | {"conformal": {"quantile_90": 0.5, "scale_floor": 0.03, "abs_unreliable": 0.3,
                                 "unreliable_below": 0.5}}
    monkeypatch.setattr(estimate_module, "model", lambda: spec)
    card = _card(0.2)
    card["diagnostics"]["neighbours"]["input"]["vote_consistency"] = 0.39
    block = estimate_module.estimate(card)
    assert block["interval"] == pytest.approx([0.73 - 0.3, 1.0])
    assert "two disjoint votes agree on 39% of samples" in block["basis"] and "±0.300" in block["basis"]
    assert "mnist-clutter" in block["basis"] and "mostly too low" in block["basis"]  # the direction of its error
    card["diagnostics"]["neighbours"]["input"]["vote_consistency"] = 0.9
    block = estimate_module.estimate(card)
    assert block["interval"] == pytest.approx([0.73 - 0.1, 0.73 + 0.1]) and "reliable" not in block["basis"]


def test_estimate_is_clipped_to_accuracies_and_undefined_without_its_inputs(monkeypatch):
    monkeypatch.setattr(estimate_module, "model", lambda: SPEC)
    assert estimate_module.estimate(_card(-4.0))["accuracy"] == 1.0
    missing = estimate_module.estimate({"diagnostics": {}, "clean_accuracy": 0.5, "label_mode": "labels"})
    assert missing["accuracy"] is None and missing["interval"] is None
    no_label_free = estimate_module.estimate(_card(0.5, label_mode="predictions"))
    assert no_label_free["accuracy"] is None


def test_a_product_term_and_the_fallback_when_a_space_is_missing(monkeypatch):
    """A term with `times` is the product of two signed sums (hand case: (0.9 - 0.6) x 0.5 = 0.15); an audit
    without the primary terms' space uses `fallback` (merged over the spec) and says why."""
    primary = {"terms": {"p": {"paths": ["clean_accuracy", "-diagnostics.neighbours.patches.value"],
                               "times": ["diagnostics.neighbours.patches.vote_consistency"]}},
               "intercept": 0.01, "coefficients": {"p": 0.4}, "range": {"p": [0.0, 1.0]}}
    spec = SPEC | primary | {"fallback": {**{k: SPEC[k] for k in ("terms", "intercept", "coefficients", "range")},
                                          "when": "no patch space in this audit"}}
    monkeypatch.setattr(estimate_module, "model", lambda: spec)
    card = _card(0.2)
    card["diagnostics"]["neighbours"]["patches"] = {"value": 0.6, "vote_consistency": 0.5, "samples": 50}
    block = estimate_module.estimate(card)
    assert block["gap"] == pytest.approx(0.01 + 0.4 * 0.15) and "no patch space" not in block["basis"]
    del card["diagnostics"]["neighbours"]["patches"]
    block = estimate_module.estimate(card)
    assert block["gap"] == pytest.approx(0.17)  # SPEC's own gap (the first test's hand case)
    assert "; no patch space in this audit" in block["basis"]
    card["diagnostics"]["neighbours"]["patches"] = {"value": 0.6, "vote_consistency": 0.5, "samples": 50,
                                                    "pooled_by": 7}
    assert "pooled these images by 7" in estimate_module.estimate(card)["basis"]


def test_flat_pooled_averages_square_blocks_only_when_too_large():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(flat_pooled(x, 16), x.reshape(2, 16))
    pooled = flat_pooled(x, 4)  # 2x2 blocks
    np.testing.assert_allclose(pooled[0], [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4,
                                           (10 + 11 + 14 + 15) / 4])
    assert flat_pooled(np.zeros((3, 1, 5, 5)), 4).shape == (3, 4)  # 5x5 -> 2x2 blocks, the last row/col dropped


def test_early_layer_is_the_first_activation():
    graph = open_model(identify(SAMPLE_MODELS / "cnn_clean.onnx"), (1, 28, 28), None)
    assert graph.early_layer() == "/relu1/Relu_output_0"


def test_early_space_is_the_feature_layer_when_the_first_activation_feeds_the_classifier(trained_mlp, tiny_data):
    card = genaudit.audit(trained_mlp["onnx"], str(tiny_data), samples=None)
    assert card["diagnostics"]["neighbours"]["early"] == card["diagnostics"]["neighbours"]["features"] | {"space": "early"}
    assert card["estimate"]["accuracy"] is not None


def test_memorizing_model_gets_a_lower_estimate_than_a_generalizing_one():
    clean = genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=500)
    memorizing = genaudit.audit(SAMPLE_MODELS / "mlp_random.onnx", "sample", samples=500)
    assert clean["estimate"]["accuracy"] > memorizing["estimate"]["accuracy"] + 0.3
    lo, hi = clean["estimate"]["interval"]
    assert lo <= clean["estimate"]["accuracy"] <= hi
    assert clean["diagnostics"]["neighbours"]["input"]["value"] > memorizing["diagnostics"]["neighbours"]["input"]["value"]
    assert verdict(clean).startswith(f"expected held-out accuracy {clean['estimate']['accuracy']:.2f} (90%: ")


def test_neighbour_vote_does_not_depend_on_unit_order():
    from genaudit.diagnostics.neighbours import neighbour_agreement

    rng = np.random.default_rng(0)
    x, ref = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    pred = rng.integers(0, 3, 60)
    assert neighbour_agreement(x[:, ::-1], ref, pred)["value"] == neighbour_agreement(x, ref, pred)["value"]


def test_neighbour_votes_run_on_a_bounded_stratified_subsample(trained_mlp, tiny_data, monkeypatch):
    from genaudit import spaces

    monkeypatch.setattr(spaces, "VOTERS", 40)  # 200 audited samples, 40 voters
    card = genaudit.audit(trained_mlp["onnx"], str(tiny_data), samples=None)
    assert card["samples"] == 200
    assert card["diagnostics"]["neighbours"]["input"]["samples"] == 40
    assert card["diagnostics"]["memorization"]["samples"] == 40


def test_the_trunk_pass_keeps_the_voters_vectors_only(trained_mlp, tiny_data, monkeypatch):
    """The voters depend on the data alone (labels, seed), so the pass keeps only their input and early-layer
    rows; `every` (the suspects table) keeps every sample's."""
    from genaudit import spaces
    from genaudit.data import load_data
    from genaudit.options import AuditOptions
    from genaudit.pipeline import trunk_pass

    monkeypatch.setattr(spaces, "VOTERS", 40)
    dataset = load_data(str(tiny_data), samples=None, seed=0)
    opts = AuditOptions()
    chosen = spaces.voter_positions(200, dataset.y, 0)
    assert len(chosen) == 40 and np.array_equal(np.bincount(dataset.y[chosen]), [10] * 4)  # stratified
    done = trunk_pass(trained_mlp["onnx"], dataset, opts)
    assert np.array_equal(done.spaces["input"].positions, chosen)
    assert len(done.spaces["input"]) == 40
    np.testing.assert_array_equal(done.spaces["input"].take(chosen),
                                  np.concatenate(list(dataset.batches(256)))[chosen].reshape(40, -1))
    every = trunk_pass(trained_mlp["onnx"], dataset, opts, every=True)
    assert len(every.spaces["input"]) == 200
