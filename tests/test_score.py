"""The generalization score: bounded, monotone in each component, and lower for a memorizing model."""

from __future__ import annotations

import math

import pytest

from conftest import SAMPLE_MODELS
from genaudit import audit
from genaudit.score import combine, features, generalization_score, model, oriented


def card_with(values: dict) -> dict:
    """A scorecard holding the given scorecard-path values."""
    card: dict = {"diagnostics": {}}
    for path, value in values.items():
        node = card["diagnostics"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return card


def baseline_values() -> dict:
    return {f["path"]: 0.5 for f in model()["features"].values()}


def test_score_is_in_unit_interval_and_monotone_in_each_component():
    spec = model()
    assert spec["features"] and all(w >= 0 for w in spec["weights"].values())
    base = generalization_score(card_with(baseline_values()))["value"]
    assert 0 < base < 1
    for name, feature in spec["features"].items():
        values = baseline_values()
        values[feature["path"]] = 0.5 + 0.1 * feature["sign"]  # one component 0.1 better, the rest unchanged
        moved = generalization_score(card_with(values))["value"]
        assert moved >= base, name
        if spec["weights"][name] > 0:
            assert moved > base, name


def test_hand_computed_combination():
    spec = {"features": {"a": {"path": "a.x", "sign": 1}, "b": {"path": "b.x", "sign": -1, "transform": "log"}},
            "weights": {"a": 2.0, "b": 1.0}, "bias": -1.0}
    card = card_with({"a.x": 0.5, "b.x": math.e})
    z = features(card, spec)
    assert z == pytest.approx({"a": 0.5, "b": -1.0})
    # sigmoid(-1 + 2*0.5 + 1*(-1)) = sigmoid(-1)
    assert combine(z, spec) == pytest.approx(1 / (1 + math.e))
    assert oriented(0.3, -1, "none") == -0.3
    assert features(card_with({"a.x": 0.5}), spec) is None  # a missing component: no score, not a biased one


def test_a_memorizing_model_scores_below_a_generalizing_one():
    clean = audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", labels=False)
    memorizing = audit(SAMPLE_MODELS / "mlp_random.onnx", "sample", labels=False)
    assert memorizing["score"]["value"] < clean["score"]["value"] - 0.05
    assert clean["score"]["components"].keys() == model()["features"].keys()
    # each model's own component values and contributions, which differ between the two models
    logit = sum(c["contribution"] for c in clean["score"]["components"].values()) + model()["bias"]
    assert clean["score"]["value"] == pytest.approx(1 / (1 + math.exp(-logit)))
    assert clean["score"]["components"] != memorizing["score"]["components"]


def test_the_score_is_the_same_with_or_without_labels():
    with_labels = audit(SAMPLE_MODELS / "cnn_clean.onnx", "sample")
    without = audit(SAMPLE_MODELS / "cnn_clean.onnx", "sample", labels=False)
    assert with_labels["label_mode"] == "labels"
    assert with_labels["score"]["value"] == pytest.approx(without["score"]["value"])
