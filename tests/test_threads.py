"""The thread budget: numpy's BLAS pools run with one thread during an audit (or the audit's explicit thread
count), and the caller's limits come back afterwards."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import genaudit
from conftest import SAMPLE_MODELS
from genaudit import pipeline
from genaudit.threads import blas_threads, budget


def _blas() -> set[int]:
    np.ones(1) @ np.ones(1)  # numpy's BLAS is loaded
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_budget_limits_blas_inside_and_restores_the_callers_limits_after():
    assert blas_threads(None) == 1 and blas_threads(3) == 3 and blas_threads(0) == 1
    with threadpool_limits(limits=2):
        with budget(None):
            assert _blas() == {1}
        with budget(2):
            assert _blas() == {2}
        assert _blas() == {2}


def test_the_audit_runs_within_the_budget(monkeypatch):
    seen = []
    inner = pipeline._audit_dataset

    def spy(*args, **kwargs):
        seen.append(_blas())
        return inner(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_audit_dataset", spy)
    with threadpool_limits(limits=2):
        genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=200, repeats=1)
        genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=200, repeats=1, threads=2)
    assert seen == [{1}, {2}]


def test_the_drift_step_of_compare_runs_within_the_budget(monkeypatch):
    from genaudit import comparison
    from genaudit.diagnostics import similarity

    seen = []
    inner = similarity.Representation.__init__

    def spy(self, *args, **kwargs):
        seen.append(_blas())
        inner(self, *args, **kwargs)

    monkeypatch.setattr(similarity.Representation, "__init__", spy)
    cards = [genaudit.audit(SAMPLE_MODELS / name, "sample", samples=100, repeats=1)
             for name in ("mlp_clean.onnx", "mlp_random.onnx")]
    with threadpool_limits(limits=2):
        comparison.drift(cards)
    assert seen == [{1}, {1}]
