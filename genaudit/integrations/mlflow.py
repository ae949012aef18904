"""Record audits in MLflow (`pip install 'genaudit[mlflow]'`): the tracked numbers as metrics
(`genaudit/estimate`, `genaudit/clean_accuracy`, ...), the JSON and HTML reports as artifacts (under `genaudit/`),
what was audited as tags.

MLflow's own conventions say where: `MLFLOW_TRACKING_URI` (a tracking server, or a local store) and
`MLFLOW_EXPERIMENT_NAME`; the active run receives the records (`mlflow.start_run()` around your code, or
`MLFLOW_RUN_ID`), else a new run named after the model is started and ended.

    genaudit score model.onnx --data mnist --mlflow
    genaudit compare ckpts/ --data mnist --mlflow       # one run; each checkpoint is a step of the metrics
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from pathlib import Path

from genaudit.errors import GenauditError
from genaudit.metrics import tracked_values

PREFIX = "genaudit/"


def check_available() -> None:
    """Refuse --mlflow before any work when MLflow is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise GenauditError("--mlflow needs MLflow, which is not installed: pip install 'genaudit[mlflow]'.")


@contextlib.contextmanager
def _run(name: str):
    import mlflow

    active = mlflow.active_run()
    with contextlib.nullcontext(active) if active is not None else mlflow.start_run(run_name=name) as run:
        yield run


def _artifacts(method: str, document: dict, stem: str) -> None:
    """The document as JSON and as the self-contained HTML report, logged under genaudit/."""
    import mlflow

    from genaudit.render import renderer_class

    with tempfile.TemporaryDirectory() as folder:
        for fmt, suffix in (("json", "json"), ("html", "html")):
            (Path(folder) / f"{stem}.{suffix}").write_text(renderer_class(fmt).text(method, document), encoding="utf-8")
        mlflow.log_artifacts(folder, artifact_path=PREFIX.rstrip("/"))


def _metrics(card: dict, step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({PREFIX + name: value for name, value in tracked_values(card).items()}, step=step)


def log_scorecard(card: dict, *, step: int | None = None, artifacts: bool = True) -> str:
    """Record one audit in the active MLflow run (or a new one named after the model). Returns the run id."""
    import mlflow

    with _run(Path(card["model"]["path"]).name) as run:
        _metrics(card, step)
        mlflow.set_tags({PREFIX + "model": card["model"]["path"], PREFIX + "data": str(card["data"].get("spec")),
                         PREFIX + "samples": card["samples"], PREFIX + "layer": str(card["layer"]),
                         PREFIX + "version": card["genaudit_version"]})
        if artifacts:
            _artifacts("report", card, "scorecard")
        return run.info.run_id


def log_comparison(result: dict) -> str:
    """Record a comparison in the active MLflow run (or a new one): each model's tracked numbers at its step in
    the series (0, 1, ...), so MLflow draws them as curves; the selection as tags; the reports as artifacts."""
    import mlflow

    with _run(f"compare ({len(result['models'])} models)") as run:
        for step, card in enumerate(result["scorecards"]):
            _metrics(card, step)
        mlflow.set_tags({PREFIX + "selected": str(result["selected"]),
                         PREFIX + "rank_by": result["rank_by"]["metric"],
                         PREFIX + "data": str(result["data"].get("spec")),
                         PREFIX + "memorization_onset": str(result["early_stopping"]["memorization_onset"]),
                         PREFIX + "failed": str(len(result.get("failed", [])))})
        _artifacts("comparison", result, "comparison")
        return run.info.run_id
