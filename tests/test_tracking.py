"""`--mlflow`: the tracked numbers as MLflow metrics, the JSON/HTML reports as artifacts, in a local file store."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_MODELS, assert_user_error
from typer.testing import CliRunner

from genaudit.cli import app
from genaudit.metrics import tracked_values

mlflow = pytest.importorskip("mlflow")  # the [mlflow] extra; the test extra installs it

MODELS = [SAMPLE_MODELS / "mlp_clean.onnx", SAMPLE_MODELS / "mlp_random.onnx"]


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A fresh local MLflow file store (MLflow 3 asks to opt in to the file backend)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "audits")
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def only_run(client):
    experiment = client.get_experiment_by_name("audits")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_score_records_metrics_tags_and_both_reports(store, tmp_path):
    out = tmp_path / "card.json"
    result = CliRunner().invoke(app, ["score", str(MODELS[0]), "--data", "sample", "--samples", "300", "--mlflow",
                                      "--json", str(out), "-f", "json"])
    assert result.exit_code == 0, result.output
    card = json.loads(out.read_text())
    run = only_run(store)
    assert json.loads(result.stdout) == card  # stdout holds the report alone; where it all went is on stderr
    assert f"wrote {out}" in result.stderr
    assert f"recorded in MLflow: run {run.info.run_id} at {(tmp_path / 'mlruns').as_uri()}" in result.stderr
    expected = {f"genaudit/{k}": v for k, v in tracked_values(card).items()}
    assert set(expected) >= {"genaudit/estimate", "genaudit/estimate_low", "genaudit/memorized"}
    assert run.data.metrics == pytest.approx(expected, rel=1e-5)  # the JSON rounds to 6 digits
    assert run.data.tags["genaudit/model"] == str(MODELS[0]) and run.data.tags["genaudit/samples"] == "300"
    assert run.info.run_name == "mlp_clean.onnx"
    files = {a.path for a in store.list_artifacts(run.info.run_id, "genaudit")}
    assert files == {"genaudit/scorecard.json", "genaudit/scorecard.html"}
    logged = json.loads(open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                 artifact_path="genaudit/scorecard.json")).read())
    assert logged["estimate"] == card["estimate"]


def test_compare_records_each_checkpoint_as_a_step(store):
    result = CliRunner().invoke(app, ["compare", *map(str, MODELS), "--data", "sample", "--samples", "200",
                                      "--order", "given", "--mlflow", "-f", "json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    run = only_run(store)
    history = store.get_metric_history(run.info.run_id, "genaudit/estimate")
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == list(range(len(MODELS)))
    assert [m.value for m in history] == pytest.approx([c["estimate"]["accuracy"] for c in comparison["scorecards"]],
                                                       rel=1e-5, abs=1e-6)  # the JSON rounds to 6 digits
    assert run.data.tags["genaudit/selected"] == comparison["selected"]
    assert "None" not in run.data.tags.values()  # no onset detected: no tag, not the word None
    assert ("genaudit/memorization_onset" in run.data.tags) == (comparison["early_stopping"]["memorization_onset"]
                                                               is not None)
    assert {a.path for a in store.list_artifacts(run.info.run_id, "genaudit")} == {
        "genaudit/comparison.json", "genaudit/comparison.html"}


def test_an_active_run_receives_the_records(store):
    from genaudit import audit
    from genaudit.integrations.mlflow import log_scorecard

    card = audit(MODELS[0], "sample", samples=200)
    with mlflow.start_run(run_name="my-training") as mine:
        assert log_scorecard(card, step=7, artifacts=False) == mine.info.run_id
    run = only_run(store)
    assert run.info.run_name == "my-training"
    assert store.get_metric_history(run.info.run_id, "genaudit/estimate")[0].step == 7


def test_mlflow_missing_is_refused_before_any_work(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "card.json"
    result = CliRunner().invoke(app, ["score", str(MODELS[0]), "--data", "sample", "--mlflow", "--json", str(out)])
    assert_user_error(result, "pip install 'genaudit[mlflow]'")
    assert not out.exists()


def test_watch_records_each_new_checkpoint_once_in_one_run(store, tmp_path):
    import os
    import shutil
    import time

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i, model in enumerate(MODELS):
        shutil.copy(model, folder / f"ckpt_{i}.onnx")
        os.utime(folder / f"ckpt_{i}.onnx", (time.time() - 60,) * 2)  # written a while ago: ready to audit
    result = CliRunner().invoke(app, ["watch", str(folder), "--data", "sample", "--samples", "200", "--polls", "2",
                                      "--interval", "0", "--mlflow", "-f", "json"])
    assert result.exit_code == 0, result.output
    run = only_run(store)
    assert run.info.run_name == "watch ckpts"
    history = store.get_metric_history(run.info.run_id, "genaudit/estimate")
    assert sorted(m.step for m in history) == [0, 1]  # the second look found nothing new: nothing logged twice
    assert {a.path for a in store.list_artifacts(run.info.run_id, "genaudit")} == {
        "genaudit/comparison.json", "genaudit/comparison.html"}


def test_validate_records_each_metrics_tau(store):
    models = [*map(str, MODELS), str(SAMPLE_MODELS / "cnn_clean.onnx")]
    result = CliRunner().invoke(app, ["validate", *models, "--data", "sample", "--holdout", "sample", "--samples",
                                      "200", "--mlflow", "-f", "json"])
    assert result.exit_code == 0, result.output
    study = json.loads(result.stdout)
    run = only_run(store)
    assert run.data.metrics["genaudit/tau/estimate"] == pytest.approx(
        study["correlations"]["estimate"]["oriented_kendall"], rel=1e-5)  # the JSON rounds to 6 digits
    assert not any(name.startswith("genaudit/tau/") and study["correlations"][name[13:]]["better"] == ""
                   for name in run.data.metrics)  # descriptive metrics have no oriented tau
    assert run.data.tags["genaudit/models"] == "3"
    assert {a.path for a in store.list_artifacts(run.info.run_id, "genaudit")} == {
        "genaudit/validation.json", "genaudit/validation.html"}


def test_a_store_mlflow_refuses_is_reported_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses a bare file store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    out = tmp_path / "card.json"
    try:
        result = CliRunner().invoke(app, ["score", str(MODELS[0]), "--data", "sample", "--mlflow", "--json",
                                          str(out)])
    finally:
        mlflow.set_tracking_uri(None)
    assert_user_error(result, "--mlflow: MLflow at", "could not record", "MLFLOW_TRACKING_URI")
    assert "MLFLOW_ALLOW_FILE_STORE=true` to opt out of this exception. Fix that" in result.stderr  # MLflow's fix
    assert not out.exists()


def test_an_mlflow_failure_while_recording_is_one_message(store, monkeypatch):
    from genaudit import audit
    from genaudit.errors import GenauditError
    from genaudit.integrations.mlflow import log_scorecard

    card = audit(MODELS[0], "sample", samples=100)
    monkeypatch.setattr(mlflow, "log_metrics", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("refused")))
    with pytest.raises(GenauditError, match="could not record: refused"):
        log_scorecard(card)
    assert only_run(store).info.status == "FAILED"  # the run it opened is closed as failed
