"""The command line through Typer's runner: success, thresholds, and every kind of bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import assert_user_error
from typer.testing import CliRunner

from genaudit.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_score_prints_the_report_and_writes_the_scorecard(trained_mlp, tiny_data, tmp_path):
    out = tmp_path / "card.json"
    result = run("score", trained_mlp["onnx"], "--data", tiny_data, "--json", out)
    assert result.exit_code == 0, result.output
    for text in ("verdict", "ablation AUC", "noise AUC", "class selectivity", "what it means"):
        assert text in result.output
    card = json.loads(out.read_text())
    assert card["schema_version"] == "2.7"
    for key in ("auc", "curve"):
        assert key in card["diagnostics"]["ablation"] and key in card["diagnostics"]["noise"]
    assert 0 <= card["diagnostics"]["selectivity"]["mean"] <= 1
    assert card["clean_accuracy"] > 0.9 and card["label_mode"] == "labels"
    assert len(card["model"]["sha256"]) == 64 and card["samples"] == 200
    assert len(card["diagnostics"]["ablation"]["curve"]["accuracy"]) == 21


def test_same_inputs_and_seed_give_identical_json(trained_mlp, tiny_data, tmp_path):
    first = run("score", trained_mlp["script"], "--data", tiny_data, "--format", "json", "--samples", 120)
    second = run("score", trained_mlp["script"], "--data", tiny_data, "--format", "json", "--samples", 120)
    other_seed = run("score", trained_mlp["script"], "--data", tiny_data, "--format", "json", "--samples", 120,
                     "--seed", 1)
    assert first.exit_code == 0 and first.output == second.output
    assert json.loads(first.output)["samples"] == 120
    assert other_seed.output != first.output


def test_the_thread_count_never_changes_the_scorecard(lane_workers):
    """--threads bounds onnxruntime's, BLAS's and genaudit's own threads (one lane, one search, one encoding
    thread at 1); the JSON is the same byte for byte, and a count below 1 is refused."""
    from conftest import SAMPLE_MODELS

    from genaudit.threads import workers

    model = SAMPLE_MODELS / "cnn_clean.onnx"
    outputs = [run("score", model, "--data", "sample", "--samples", 300, "--format", "json", *extra).output
               for extra in ((), ("--threads", 1), ("--threads", 3))]
    assert outputs[0] == outputs[1] == outputs[2] and json.loads(outputs[0])["samples"] == 300
    assert lane_workers == [workers(None), 1, 3]
    assert_user_error(run("score", model, "--data", "sample", "--threads", 0), "--threads")


def test_no_labels_uses_the_models_own_predictions(trained_mlp, tiny_data):
    card = json.loads(run("score", trained_mlp["onnx"], "--data", tiny_data, "--no-labels", "-f", "json").output)
    assert card["label_mode"] == "predictions"
    assert card["diagnostics"]["ablation"]["curve"]["accuracy"][0] == 1.0


def test_thresholds_pass_and_fail(trained_mlp, tiny_data, tmp_path):
    ok = run("score", trained_mlp["onnx"], "--data", tiny_data, "--fail-under", "ablation.auc=0.01",
             "--fail-under", "clean_accuracy=0.5")
    assert ok.exit_code == 0, ok.output
    failed = run("score", trained_mlp["onnx"], "--data", tiny_data, "--fail-under", "noise.auc=1.5",
                 "--json", tmp_path / "c.json")
    assert failed.exit_code == 1
    assert "noise.auc" in failed.output and "below the required 1.5" in failed.output
    assert (tmp_path / "c.json").exists()  # the scorecard is still written for the CI log
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--fail-under", "nope=1"),
                      "no numeric metric 'nope'")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--fail-under", "auc"),
                      "METRIC=VALUE")


def test_markdown_format(trained_mlp, tiny_data):
    result = run("score", trained_mlp["onnx"], "--data", tiny_data, "-f", "markdown")
    assert result.exit_code == 0
    assert "| ablation AUC |" in result.output and result.output.startswith("### genaudit")


def test_layers_lists_candidates_and_marks_the_default(cnn_paths):
    result = run("layers", cnn_paths["onnx"])
    assert result.exit_code == 0, result.output
    assert "★" in result.output and "Conv" in result.output
    assert_user_error(run("layers", cnn_paths["script"]), "--input-shape")
    assert run("layers", cnn_paths["script"], "--input-shape", "1,8,8").exit_code == 0


def test_choosing_another_layer(cnn_paths, tiny_data):
    from genaudit.models import identify, open_model

    graph = open_model(identify(cnn_paths["onnx"]), None, None)
    conv = next(lay.name for lay in graph.layers() if lay.op == "Conv")
    card = json.loads(run("score", cnn_paths["onnx"], "--data", tiny_data, "--layer", conv, "-f", "json").output)
    assert card["layer"]["name"] == conv and card["layer"]["units"] == 6 and not card["layer"]["default"]
    assert_user_error(run("score", cnn_paths["onnx"], "--data", tiny_data, "--layer", "nope"),
                      "genaudit layers")


def _regression_model(path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1)),
                          (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "b"}})


def test_bad_inputs_get_one_clear_message_and_exit_2(trained_mlp, tiny_data, tmp_path):
    import torch

    assert_user_error(run("score", tmp_path / "missing.onnx", "--data", tiny_data), "does not exist")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    assert_user_error(run("score", corrupt, "--data", tiny_data), "not a readable model")
    torch.save(torch.nn.Sequential(torch.nn.Linear(64, 4)), tmp_path / "pickled.pth")
    assert_user_error(run("score", tmp_path / "pickled.pth", "--data", tiny_data), "never unpickles",
                      "torch.jit.script")
    _regression_model(tmp_path / "regression.onnx")
    assert_user_error(run("score", tmp_path / "regression.onnx", "--data", tiny_data), "Regression")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", "sample"), "expects inputs of shape 1x8x8",
                      "--resize 8,8")
    assert_user_error(run("score", trained_mlp["script"], "--data", "sample"), "does not accept the data's shape")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", "imagenet-22k"), "Unknown data")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", "mnist", "--data-dir", tmp_path / "empty"),
                      "not in the cache", "--data-dir")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.uint8))
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tmp_path / "empty.npz"), "holds no samples")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--samples", 0), "at least 1")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--json", tmp_path / "no/dir/c.json"),
                      "does not exist")
    assert not list(tmp_path.glob("**/*.tmp"))


def test_input_and_output_options_reach_the_scorecard(trained_mlp, tiny_data, tmp_path):
    out = tmp_path / "card.json"
    result = run("score", trained_mlp["onnx"], "--data", tiny_data, "--json", out, "--preprocess", "center",
                 "--layout", "flat", "--output", "logits", "--format", "json")
    assert result.exit_code == 0, result.output
    card = json.loads(out.read_text())
    assert card["model"]["input_layout"] == "flat" and card["model"]["output"]["name"] == "logits"
    assert card["data"]["preprocess"]["preset"] == "center" and card["data"]["preprocess"]["mean"] == [0.5]
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--layout", "hwc"),
                      "--layout must be one of nchw, nhwc, flat")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--output", "probs"),
                      "--output probs is not one of the model's outputs (0: 'logits')")
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tiny_data, "--preprocess", "imagenet"),
                      "preset 'imagenet'", "--channels")


def test_labels_outside_the_models_classes(trained_mlp, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 1, 8, 8), np.uint8), y=np.array([0, 1, 2, 9] * 2))
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tmp_path / "d.npz"), "--no-labels")
    assert run("score", trained_mlp["onnx"], "--data", tmp_path / "d.npz", "--no-labels").exit_code == 0


def test_per_layer_table_matches_auditing_each_layer_alone(cnn_paths, tiny_data, tmp_path):
    from genaudit import audit

    card = audit(cnn_paths["onnx"], str(tiny_data), layers="all")
    names = [row["name"] for row in card["layers"]]
    assert card["layer"]["name"] in names and len(names) >= 4
    assert card["regularize_layer"]["name"] == max(card["layers"], key=lambda r: r["intra_class_variance_sum"])["name"]
    for row in card["layers"]:
        alone = audit(cnn_paths["onnx"], str(tiny_data), layer=row["name"])["diagnostics"]
        assert row["intra_class_variance_ratio"] == pytest.approx(alone["steadiness"]["ratio"], rel=1e-5)
        assert row["magnitude"] == pytest.approx(alone["magnitude"]["value"], rel=1e-5)
        assert row["nodes_accuracy"] == pytest.approx(alone["nodes"]["accuracy"])
    result = run("score", cnn_paths["onnx"], "--data", tiny_data, "--layers", "all")
    assert result.exit_code == 0 and "Per layer" in result.output and "regularize" in result.output


def test_every_diagnostic_is_in_the_report_and_scorecard(trained_mlp, tiny_data):
    from genaudit.metrics import METRICS

    result = run("score", trained_mlp["onnx"], "--data", tiny_data, "--probes", 50, "-f", "json")
    card = json.loads(result.output)
    for key in ("ablation", "noise", "selectivity", "steadiness", "consistency", "magnitude", "perplexity",
                "nodes", "input"):
        assert key in card["diagnostics"], key
    table = " ".join(run("score", trained_mlp["onnx"], "--data", tiny_data, "--probes", 50).output.split())
    for metric in METRICS:  # each by its label, with its short meaning (the full one is in `explain`)
        assert metric.label in table and metric.short in table, metric.name
    for group in ("robustness", "class structure", "magnitude", "input-space"):
        assert group in table


def test_explain_and_thresholds_by_metric_name(trained_mlp, tiny_data):
    listing = run("explain")
    assert listing.exit_code == 0 and "consistency" in listing.output
    one = run("explain", "consistency")
    assert one.exit_code == 0 and "Davies" in one.output and "lower is better" in one.output
    assert_user_error(run("explain", "nope"), "Unknown metric")
    failed = run("score", trained_mlp["onnx"], "--data", tiny_data, "--fail-under", "nodes=1.01")
    assert failed.exit_code == 1 and "nodes.accuracy" in failed.output
