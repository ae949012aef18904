"""Warnings on the clean predictions: constant output, and accuracy near chance or far below the neighbours' vote
with preset suggestions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from genaudit import audit, sanity
from genaudit.data import Preprocess


def test_chance_level_and_near_chance_by_hand():
    labels = np.array([0, 0, 0, 1, 2, 2])
    assert sanity.chance_level(labels) == 0.5
    # near chance below 0.5 + 0.1 * (1 - 0.5) = 0.55
    assert sanity.near_chance(0.54, labels) and not sanity.near_chance(0.56, labels)


def test_constant_output_is_reported_only_when_every_prediction_is_the_same():
    assert "same class (3)" in sanity.constant_output(np.full(10, 3))
    assert sanity.constant_output(np.array([3] * 9 + [1])) is None


def test_advice_lists_the_presets_that_do_clearly_better_best_first():
    labels = np.repeat(np.arange(4), 25)
    accuracy = {"unit": None, "raw": 0.9, "center": 0.3, "mnist": 0.95, "cifar10": None}  # None: not tried
    advice = sanity.preprocessing_advice(0.25, labels, accuracy.get, list(accuracy), 100)
    assert "near chance (0.25)" in advice
    assert advice.endswith("Tried on 100 samples: --preprocess mnist gives 0.95, --preprocess raw gives 0.90.")
    assert sanity.preprocessing_advice(0.8, labels, accuracy.get, list(accuracy), 100) is None
    nothing = sanity.preprocessing_advice(0.25, labels, lambda name: 0.26, list(accuracy), 100)
    assert "No preprocessing preset does clearly better" in nothing


def test_far_below_the_vote_only_presets_that_reach_it_are_named():
    labels = np.repeat(np.arange(10), 10)  # chance 0.1: "far below" the vote 0.91 is below 0.91 - 0.09 = 0.82
    assert sanity.below_vote(0.81, 0.91, labels) and not sanity.below_vote(0.83, 0.91, labels)
    assert not sanity.below_vote(0.2, None, labels)
    accuracy = {"mnist": 0.95, "raw": 0.60, "center": 0.80}
    advice = sanity.preprocessing_advice(0.45, labels, accuracy.get, list(accuracy), 256, vote=0.91)
    assert "Clean accuracy 0.45 is far below how often the labels agree with their neighbours' vote (0.91)" in advice
    assert advice.endswith("Tried on 256 samples: --preprocess mnist gives 0.95.")  # 0.60 and 0.80 stay below it

    def untried(name):
        raise AssertionError("no preset is tried above the vote's level")

    assert sanity.preprocessing_advice(0.85, labels, untried, list(accuracy), 256, vote=0.91) is None
    # below the vote with no preset reaching it: a barely trained model, nothing to say
    assert sanity.preprocessing_advice(0.50, labels, {"mnist": 0.68}.get, ["mnist"], 256, vote=0.92) is None
    # near chance, a preset that lifts accuracy but not to the vote is not named either
    nothing = sanity.preprocessing_advice(0.12, labels, {"raw": 0.39}.get, ["raw"], 256, vote=0.92)
    assert "near chance" in nothing and "No preprocessing preset does clearly better" in nothing


def test_far_below_its_own_confidence_the_presets_are_tried():
    assert sanity.overconfident(0.25, 0.87) and not sanity.overconfident(0.72, 0.65)
    assert not sanity.overconfident(0.5, 0.69) and sanity.overconfident(0.5, 0.71)
    assert not sanity.overconfident(0.1, None)
    labels = np.repeat(np.arange(10), 10)
    # a CIFAR-10 CNN trained on x/255 and fed mean/std-normalized inputs: above the weak vote (0.39 - 0.09), but
    # far more confident than right
    advice = sanity.preprocessing_advice(0.34, labels, {"unit": 0.99, "raw": 0.30}.get, ["unit", "raw"], 256,
                                         vote=0.39, confidence=0.93)
    assert "Clean accuracy 0.34 is far below the model's confidence in its own predictions (0.93 on average)" in advice
    assert advice.endswith("Tried on 256 samples: --preprocess unit gives 0.99.")
    # noisy labels open the same gap; no preset helps, so nothing is said
    assert sanity.preprocessing_advice(0.6, labels, {"raw": 0.3}.get, ["raw"], 256, vote=0.55, confidence=0.95) is None


def test_the_audit_passes_the_models_mean_confidence(tmp_path, tiny_data, monkeypatch):
    import onnxruntime as ort

    from genaudit.data import load_data

    model = _raw_scale_model(tmp_path / "half.onnx", [0.0, 0.0, -1.0, -1.0])
    seen = {}
    advice = sanity.preprocessing_advice

    def recording(*args, **kwargs):
        seen.update(kwargs, args=args)
        return advice(*args, **kwargs)

    monkeypatch.setattr(sanity, "preprocessing_advice", recording)
    audit(model, str(tiny_data), samples=None)
    data = load_data(str(tiny_data), samples=None)
    logits = ort.InferenceSession(str(model)).run(None, {"input": np.concatenate(list(data.batches(200)))})[0]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert seen["confidence"] == pytest.approx(probabilities.max(1).mean(), abs=1e-6)


def _raw_scale_model(path, biases):
    """A classifier of tiny_data's lit quadrant that expects pixel values 0..255: logit c = mean of quadrant c +
    biases[c], exported to ONNX at `path`."""
    import torch

    weight = torch.zeros(4, 1, 8, 8)
    for c in range(4):
        r, q = divmod(c, 2)
        weight[c, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] = 1 / 16
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[:4] = weight.reshape(4, 64)
        model[1].bias.zero_()
        model[3].weight.copy_(torch.eye(4, 8))
        model[3].bias.copy_(torch.tensor(biases))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
    return path


@pytest.fixture(scope="module")
def raw_pixel_model(tmp_path_factory):
    """Fed [0, 1] pixels, class 0's bias (+100) wins every time: accuracy at chance."""
    return _raw_scale_model(tmp_path_factory.mktemp("raw") / "raw.onnx", [100.0, 0, 0, 0])


def test_wrong_preprocessing_above_chance_is_caught_against_the_vote(tmp_path, tiny_data):
    # Fed [0, 1] pixels (lit quadrant about 0.7, the others about 0.1), classes 2 and 3 lose to their bias of -1:
    # accuracy 0.5, above chance (0.25 + 0.075) but far below the pixel neighbours' vote, which sees every class.
    model = _raw_scale_model(tmp_path / "half.onnx", [0.0, 0.0, -1.0, -1.0])
    card = audit(model, str(tiny_data), samples=None)
    assert card["clean_accuracy"] == 0.5 and not sanity.near_chance(0.5, np.repeat(np.arange(4), 50))
    votes = card["diagnostics"]["neighbours"]
    vote = max(votes[space]["reference_agreement"] for space in ("input", "patches"))
    assert vote > 0.9
    (advice,) = card["warnings"]
    assert f"far below how often the labels agree with their neighbours' vote ({vote:.2f})" in advice
    assert "Tried on 200 samples: --preprocess raw gives 1.00" in advice
    assert audit(model, str(tiny_data), samples=None, preprocess=Preprocess.from_preset("raw"))["warnings"] == []


def test_wrong_preprocessing_is_caught_and_the_right_preset_suggested(raw_pixel_model, tiny_data):
    card = audit(raw_pixel_model, str(tiny_data), samples=None)
    assert card["clean_accuracy"] == 0.25
    constant, advice = card["warnings"]
    assert "Every input gets the same class (0)" in constant
    assert "near chance (0.25)" in advice and "Tried on 200 samples: --preprocess raw gives 1.00." in advice

    fixed = audit(raw_pixel_model, str(tiny_data), samples=None, preprocess=Preprocess.from_preset("raw"))
    assert fixed["clean_accuracy"] == 1.0 and fixed["warnings"] == []
    # with explicit values that are no preset, every preset is tried
    custom = audit(raw_pixel_model, str(tiny_data), samples=None, preprocess=Preprocess(scale=1 / 512))
    assert "--preprocess raw gives 1.00" in custom["warnings"][1]


def test_without_labels_only_the_constant_output_is_checked(raw_pixel_model, tiny_data):
    card = audit(raw_pixel_model, str(tiny_data), samples=None, labels=False)
    assert len(card["warnings"]) == 1 and "same class" in card["warnings"][0]


def test_the_report_shows_the_warnings_first(raw_pixel_model, tiny_data):
    from typer.testing import CliRunner

    from genaudit.cli import app

    for fmt in ("table", "markdown"):
        result = CliRunner().invoke(app, ["score", str(raw_pixel_model), "--data", str(tiny_data), "-f", fmt])
        text = " ".join(result.output.split())
        assert result.exit_code == 0 and "warning:" in text and "--preprocess raw gives 1.00" in text
        assert text.index("warning:") < text.index("ablation")


def test_compare_reports_each_models_warnings(raw_pixel_model, trained_mlp, tiny_data):
    from typer.testing import CliRunner

    from genaudit.cli import app

    for fmt in ("table", "markdown"):
        result = CliRunner().invoke(app, ["compare", str(raw_pixel_model), str(trained_mlp["onnx"]), "--data",
                                          str(tiny_data), "-f", fmt], env={"COLUMNS": "200"})
        text = " ".join(result.output.split())
        assert result.exit_code == 0 and text.count("same class (0)") == 1 and "raw.onnx" in text


def test_html_reports_show_the_warnings(raw_pixel_model, tiny_data):
    from genaudit import compare
    from genaudit.render.html import compare_page, score_page

    card = audit(raw_pixel_model, str(tiny_data), samples=None)
    page = score_page(card)
    assert page.count("class=warn>") == 2 and "<code class=flag>--preprocess raw</code> gives 1.00" in page
    assert compare_page(compare([raw_pixel_model], str(tiny_data), samples=None)).count("class=warn>") == 2


def test_the_verdict_defers_to_the_warnings(raw_pixel_model, tiny_data):
    from genaudit.render import verdict

    assert verdict(audit(raw_pixel_model, str(tiny_data), samples=None)).startswith("the clean predictions look wrong")
    fixed = audit(raw_pixel_model, str(tiny_data), samples=None, preprocess=Preprocess.from_preset("raw"))
    assert "generalization score" in verdict(fixed)


def test_suspects_carry_the_models_warnings_and_show_them_first(raw_pixel_model, trained_mlp, tiny_data):
    from genaudit.render import renderer_class
    from genaudit.suspects import suspects

    result = suspects(raw_pixel_model, str(tiny_data), samples=None)
    constant, advice = result["warnings"]
    assert "same class (0)" in constant and "--preprocess raw gives 1.00" in advice
    for fmt in ("table", "markdown", "html"):
        shown = " ".join(renderer_class(fmt).text("suspects", result).split())
        assert shown.lower().index("warning") < shown.index("suspicion")
        assert "raw</code> gives 1.00" in shown if fmt == "html" else "--preprocess raw gives 1.00" in shown
    assert suspects(trained_mlp["onnx"], str(tiny_data), samples=None)["warnings"] == []
