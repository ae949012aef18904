"""Check genaudit on your own domain: audit models on training data, measure their true accuracy on a holdout
set, and report how well each diagnostic ranks them (Kendall tau, Spearman rho), overall and within each
training run. A good predictor has a large positive oriented tau (sign flipped for lower-is-better metrics)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genaudit.backends import run_tasks, succeeded
from genaudit.comparison import expand
from genaudit.data import Dataset
from genaudit.metrics import METRICS
from genaudit.options import AuditOptions, DataOptions, RunOptions, build, signature
from genaudit.pipeline import accuracy_on, audit_dataset
from genaudit.scorecard import SCHEMA_VERSION, Scorecard, lookup
from genaudit.version import __version__


def run_of(path: Path) -> str:
    """The training run a checkpoint belongs to: its file name without a trailing epoch/step number."""
    return re.sub(r"[_\-.]?(e|ep|epoch|step|ckpt)?\d+$", "", path.stem, flags=re.IGNORECASE) or path.stem


def rank_correlations(values: list[float | None], truth: list[float]) -> dict:
    """Kendall tau-b and Spearman rho between a diagnostic and true accuracy, over the models that have it."""
    from scipy.stats import kendalltau, spearmanr

    pairs = [(v, t) for v, t in zip(values, truth) if v is not None]
    if len(pairs) < 3 or len({v for v, _ in pairs}) < 2 or len({t for _, t in pairs}) < 2:
        return {"kendall": None, "spearman": None, "n": len(pairs)}
    v, t = np.array(pairs).T
    return {"kendall": float(kendalltau(v, t)[0]), "spearman": float(spearmanr(v, t)[0]), "n": len(pairs)}


def correlation_table(cards: list[dict], truth: list[float], runs: list[str]) -> dict:
    """Per metric: overall tau/rho, the mean tau within training runs, oriented by the metric's better side."""
    table = {}
    for metric in METRICS:
        values = [lookup(c, metric.path) for c in cards]
        if all(v is None for v in values):
            continue
        overall = rank_correlations(values, truth)
        within = []
        for run in sorted(set(runs)):
            idx = [i for i, r in enumerate(runs) if r == run]
            tau = rank_correlations([values[i] for i in idx], [truth[i] for i in idx])["kendall"]
            if tau is not None:
                within.append(tau)
        table[metric.name] = {
            "path": metric.path, "better": metric.better, **overall,
            "within_run_kendall_mean": float(np.mean(within)) if within else None, "runs": len(within),
            "oriented_kendall": metric.better.oriented(overall["kendall"]),
        }
    return table


def validate_task(model: Path, train: Dataset, hold: Dataset, opts: AuditOptions) -> tuple[Scorecard, float]:
    """One model's audit on the training data and its accuracy on the holdout set (a backend task)."""
    return audit_dataset(model, train, opts), accuracy_on(model, hold, opts)


def validate(models: list[str | Path], data: Any, holdout: Any, *, holdout_samples: int | None = None,
             runs: dict[str, str] | None = None, progress: Callable[[int, int], None] | None = None,
             **options) -> dict:
    """Audit every model on `data` (training data), measure accuracy on `holdout` (read with the same data
    options), correlate. `runs` maps a model path to its training-run id (default: the file name without its
    epoch number). The keyword options are those of `genaudit.audit`, plus where the audits run
    (`backend`, `jobs`, `ray_address`, `task_cpus`, as for `genaudit.compare`)."""
    data_opts, opts, run = build(options, DataOptions, AuditOptions, RunOptions)
    run.check()
    paths = expand(models)
    train = data_opts.load(data, opts.seed)
    hold = replace(data_opts, samples=holdout_samples).load(holdout, opts.seed)
    results, failures = run_tasks(validate_task, paths, (train, hold, opts), run, progress)
    paths, results = succeeded(paths, results, failures)
    cards, truth = [card for card, _ in results], [accuracy for _, accuracy in results]
    run_ids = [(runs or {}).get(str(p)) or (runs or {}).get(p.name) or run_of(p) for p in paths]
    return {
        "schema_version": SCHEMA_VERSION,
        "genaudit_version": __version__,
        "data": train.spec,
        "holdout": hold.spec,
        "models": [{"model": str(p), "run": r, "holdout_accuracy": a,
                    "metrics": {m.name: lookup(c, m.path) for m in METRICS}}
                   for p, r, a, c in zip(paths, run_ids, truth, cards)],
        "correlations": correlation_table(cards, truth, run_ids),
        "failed": [f.as_dict() for f in failures],
    }


validate.__signature__ = signature(validate, DataOptions, AuditOptions, RunOptions)
