"""CI gates that respect each metric's better direction, baselines that must compare, and ties that are ties."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_MODELS
from genaudit import thresholds
from genaudit.cli import app
from genaudit.comparison import more_samples_separate, selection
from genaudit.errors import GenauditError
from genaudit.metrics import BY_NAME
from genaudit.render import sparkline
from genaudit.spaces import VOTERS

runner = CliRunner()
CARD = {"data": {"spec": "sample", "split": "train", "samples": 100, "preprocess": {}}, "layer": {"default": True},
        "label_mode": "labels", "seed": 0, "clean_accuracy": 0.9,
        "diagnostics": {"consistency": {"value": 2.0}, "perplexity": {"value": 0.5}},
        "estimate": {"accuracy": 0.8}}


def test_fail_under_means_worse_in_the_metrics_better_direction():
    assert thresholds.failures(CARD, [thresholds.parse("clean_accuracy=0.95")]) == [
        "clean_accuracy = 0.9000 is below the required 0.95"]
    assert thresholds.failures(CARD, [thresholds.parse("consistency=1.5")]) == [  # lower is better: 2.0 fails
        "consistency.value = 2.0000 is above the allowed 1.5"]
    assert thresholds.failures(CARD, [thresholds.parse("consistency=2.5")]) == []
    with pytest.raises(GenauditError, match="descriptive.*--fail-if 'perplexity<0.4'"):
        thresholds.parse("perplexity=0.4")


def test_fail_if_states_the_side_explicitly():
    assert thresholds.failures(CARD, [thresholds.parse_condition("perplexity>0.4")]) == [
        "perplexity.value = 0.5000 is above the allowed 0.4"]
    assert thresholds.failures(CARD, [thresholds.parse_condition("perplexity<0.4")]) == []
    with pytest.raises(GenauditError, match="METRIC<VALUE"):
        thresholds.parse_condition("perplexity=0.4")


def test_a_baseline_audited_differently_is_refused():
    other = {**CARD, "data": {**CARD["data"], "spec": "mnist"}, "label_mode": "predictions"}
    with pytest.raises(GenauditError, match="data: baseline .*mnist.*label mode"):
        thresholds.regressions(CARD, other, 0.01)
    older = {**CARD, "estimate": {"accuracy": 0.8, "model": 5}}  # estimated by another genaudit's estimator
    with pytest.raises(GenauditError, match="estimate model: baseline 5, this audit 6.*with this genaudit"):
        thresholds.regressions({**CARD, "estimate": {"accuracy": 0.8, "model": 6}}, older, 0.01)
    assert thresholds.regressions(CARD, {**CARD, "estimate": {"accuracy": 0.85}}, 0.01) == [
        "estimate.accuracy = 0.8000 is worse than the baseline's 0.8500 by 0.0500 (tolerance 0.01)"]


def test_ties_within_sampling_error_are_reported_as_ties():
    name = lambda i: f"m{i}"  # noqa: E731
    identical = selection([0, 1, 2], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0], name)
    assert not identical["significant"] and identical["tied_with"] == ["m1", "m2"]
    close = selection([0, 1], [0.80, 0.79], [0.01, 0.01], name)  # 0.01 < 2 * sqrt(2) * 0.01
    assert not close["significant"] and close["tied_with"] == ["m1"]
    clear = selection([0, 1], [0.90, 0.70], [0.01, 0.01], name)
    assert clear["significant"] and clear["tied_with"] == []
    assert len(set(sparkline([0.5, 0.5, 0.5], 0.5, 0.5))) == 1  # identical values draw a flat line, no trend


def test_tied_models_are_told_whether_more_samples_could_separate_them():
    """The estimate and the neighbour votes read votes among at most VOTERS samples: once every audit's votes ran
    among that many, --samples cannot shrink their error, and the selection's reason says so instead of advising it;
    clean accuracy's error shrinks with every sample, and a vote among fewer voters than VOTERS with more of them."""
    name = lambda i: f"m{i}"  # noqa: E731
    capped = [{"diagnostics": {"neighbours": {"input": {"samples": VOTERS}}}}] * 2
    fewer = [{"diagnostics": {"neighbours": {"input": {"samples": 500}}}}, capped[0]]
    assert not more_samples_separate(BY_NAME["estimate"], capped)
    assert not more_samples_separate(BY_NAME["neighbours_features"], capped)
    assert more_samples_separate(BY_NAME["clean_accuracy"], capped)
    assert more_samples_separate(BY_NAME["estimate"], fewer)
    stuck = selection([0, 1], [0.80, 0.79], [0.01, 0.01], name, metric="estimate", more_samples=False)
    assert "more samples will not separate them" in stuck["why"] and "--samples," not in stuck["why"]
    assert "audit more samples, --samples" in selection([0, 1], [0.80, 0.79], [0.01, 0.01], name)["why"]


def test_compare_says_which_model_failed(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = runner.invoke(app, ["compare", str(SAMPLE_MODELS / "mlp_clean.onnx"), str(broken), "--data", "sample",
                                 "--samples", "100"])
    assert result.exit_code == 2 and str(broken) in " ".join(result.output.split())


def test_compare_reports_identical_models_as_a_tie():
    import genaudit

    result = genaudit.compare([SAMPLE_MODELS / "mlp_clean.onnx", SAMPLE_MODELS / "mlp_clean.pt2"], "sample",
                              samples=200, order="given")
    assert not result["selection"]["significant"] and len(result["selection"]["tied_with"]) == 1


def test_ablation_reports_its_spread_over_unit_orders():
    import numpy as np

    from genaudit.diagnostics.ablation import ablation
    from genaudit.features import FeatureSet
    from genaudit.heads import AffineHead

    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 6)).astype(np.float32)
    head = AffineHead(rng.normal(size=(6, 3)), np.zeros(3))
    fs = FeatureSet(features, head(features), head(features).argmax(1), None)
    both = ablation(head, fs, repeats=4, seed=2)
    alone = [ablation(head, fs, order=o)["auc"] for o in _orders(6, 4, 2)]  # the same four orders, one by one
    assert both["standard_error"] == pytest.approx(np.std(alone) / 2)  # std / sqrt(4)
    assert ablation(head, fs, repeats=1)["standard_error"] is None


def _orders(units: int, repeats: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.permutation(units) for _ in range(repeats)]


def test_device_selection_and_fallback():
    from genaudit.models.runtime import CPU, CUDA, providers_for

    assert providers_for("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert providers_for("auto", [CPU]) == [CPU]  # no CUDA build: the CPU, silently
    assert providers_for("cuda", [CUDA, CPU]) == [CUDA, CPU]  # CPU serves any op CUDA lacks
    assert providers_for("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(GenauditError, match="no CUDA execution provider.*genaudit\\[gpu\\]"):
        providers_for("cuda", [CPU])
    with pytest.raises(GenauditError, match="--device must be one of auto, cpu, cuda"):
        providers_for("tpu", [CPU])


def test_the_provider_used_is_recorded_and_cuda_is_refused_here():
    import onnxruntime as ort

    import genaudit

    card = genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=100, device="auto")
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else \
        "CPUExecutionProvider"
    assert card["model"]["provider"] == expected and card["options"]["device"] == "auto"
    if expected == "CPUExecutionProvider":
        result = runner.invoke(app, ["score", str(SAMPLE_MODELS / "mlp_clean.onnx"), "--data", "sample",
                                     "--device", "cuda"])
        assert result.exit_code == 2 and "genaudit[gpu]" in " ".join(result.output.split())
