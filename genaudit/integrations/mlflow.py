"""Record audits in MLflow (`pip install 'genaudit[mlflow]'`): the tracked numbers as metrics
(`genaudit/estimate`, `genaudit/clean_accuracy`, ...), the JSON and HTML reports as artifacts (under `genaudit/`),
what was audited as tags.

MLflow's own conventions say where: `MLFLOW_TRACKING_URI` (a tracking server, or a local store) and
`MLFLOW_EXPERIMENT_NAME`; the active run receives the records (`mlflow.start_run()` around your code, or
`MLFLOW_RUN_ID`), else a new run named after the model is started and ended.

    genaudit score model.onnx --data mnist --mlflow
    genaudit compare ckpts/ --data mnist --mlflow       # one run; each checkpoint is a step of the metrics
    genaudit watch ckpts/ --data mnist --mlflow         # one run for the watch; each new checkpoint a step
    genaudit validate zoo/ --data train --holdout test --mlflow   # each metric's tau with holdout accuracy
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from pathlib import Path

from genaudit.errors import GenauditError, first_paragraph
from genaudit.metrics import Better, tracked_values

PREFIX = "genaudit/"


def check_available() -> None:
    """Refuse --mlflow before any work when MLflow is not installed or its tracking store cannot be used (a
    server that does not answer, a store MLflow refuses)."""
    if importlib.util.find_spec("mlflow") is None:
        raise GenauditError("--mlflow needs MLflow, which is not installed: pip install 'genaudit[mlflow]'.")
    with _reported():
        import mlflow

        mlflow.MlflowClient().search_experiments(max_results=1)


@contextlib.contextmanager
def _reported():
    """MLflow's errors (an unreachable server, a refused store, ...) as one user-facing message, with the whole
    first paragraph of MLflow's own (where it says what to do, e.g. how to opt in to a file store)."""
    try:
        yield
    except GenauditError:
        raise
    except Exception as exc:  # MLflow raises its own and its HTTP client's exception types
        import mlflow

        raise GenauditError(f"--mlflow: MLflow at {mlflow.get_tracking_uri()} could not record: "
                            f"{first_paragraph(exc).rstrip('.')}. Fix that, or point MLFLOW_TRACKING_URI at a store or "
                            "server that works.") from None


@contextlib.contextmanager
def run(name: str):
    """The active MLflow run, or a new one named `name` when there is none (ended on leaving: FINISHED, or FAILED
    / KILLED when the body raised or was interrupted)."""
    import mlflow

    with _reported():
        active = mlflow.active_run()
        started = None if active is not None else mlflow.start_run(run_name=name)
    status = "FINISHED"
    try:
        yield active or started
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        if started is not None:
            with _reported():
                mlflow.end_run(status)


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

    with run(Path(card["model"]["path"]).name) as current, _reported():
        _metrics(card, step)
        mlflow.set_tags({PREFIX + "model": card["model"]["path"], PREFIX + "data": str(card["data"].get("spec")),
                         PREFIX + "samples": card["samples"], PREFIX + "layer": str(card["layer"]),
                         PREFIX + "version": card["genaudit_version"]})
        if artifacts:
            _artifacts("report", card, "scorecard")
        return current.info.run_id


def log_comparison(result: dict, first: int = 0) -> str:
    """Record a comparison in the active MLflow run (or a new one): each model's tracked numbers at its step in
    the series (0, 1, ...; from `first` on: a watch logs each checkpoint once, as it appears), so MLflow draws
    them as curves; the selection as tags; the reports as artifacts (replaced on each call)."""
    import mlflow

    with run(f"compare ({len(result['models'])} models)") as current, _reported():
        for step, card in enumerate(result["scorecards"]):
            if step >= first:
                _metrics(card, step)
        known = {"selected": result["selected"], "memorization_onset": result["early_stopping"]["memorization_onset"]}
        mlflow.set_tags({PREFIX + "rank_by": result["rank_by"]["metric"],
                         PREFIX + "data": str(result["data"].get("spec")),
                         PREFIX + "failed": str(len(result.get("failed", []))),
                         # a model is named only when there is one (no tag rather than the word None)
                         **{PREFIX + key: str(value) for key, value in known.items() if value is not None}})
        _artifacts("comparison", result, "comparison")
        return current.info.run_id


def log_validation(study: dict) -> str:
    """Record a validation study in the active MLflow run (or a new one): per directional metric its oriented
    Kendall tau with holdout accuracy (`genaudit/tau/<metric>`) and its mean tau within training runs
    (`genaudit/tau_within_runs/<metric>`); the study's reports as artifacts."""
    import mlflow

    with run(f"validate ({len(study['models'])} models)") as current, _reported():
        values = {}
        for name, c in study["correlations"].items():
            if c["oriented_kendall"] is not None:
                values[f"{PREFIX}tau/{name}"] = c["oriented_kendall"]
            within = Better(c["better"]).oriented(c["within_run_kendall_mean"])
            if within is not None:
                values[f"{PREFIX}tau_within_runs/{name}"] = within
        mlflow.log_metrics(values)
        mlflow.set_tags({PREFIX + "data": str(study["data"].get("spec")),
                         PREFIX + "holdout": str(study["holdout"].get("spec")),
                         PREFIX + "models": str(len(study["models"])), PREFIX + "failed": str(len(study["failed"]))})
        _artifacts("validation", study, "validation")
        return current.info.run_id
