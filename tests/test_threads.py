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


def test_each_runs_every_item_on_its_threads_and_raises_the_first_error_in_item_order():
    import threading
    import time

    import pytest

    from genaudit.threads import each

    seen, lock = [], threading.Lock()

    def record(item):
        with lock:
            seen.append((item, threading.current_thread().name))

    each(record, range(5), 1, "x")
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4] and {t for _, t in seen} == {threading.current_thread().name}
    seen.clear()
    each(record, range(5), 2, "genaudit-test")
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3, 4] and all(t.startswith("genaudit-test") for _, t in seen)

    started = []

    def fail_some(item):
        started.append(item)
        time.sleep(0.05 * (item == 0))
        if item in (0, 1):
            raise ValueError(f"item {item}")

    with pytest.raises(ValueError, match="item 0"):  # item 1 failed first; item 0's error comes first in order
        each(fail_some, range(20), 2, "genaudit-test")
    assert len(started) < 20  # the items not started when the errors came were dropped


def test_each_hands_a_ctrl_c_to_the_caller_at_once_and_starts_nothing_more():
    import signal
    import threading
    import time

    import pytest

    from genaudit.threads import each

    main, started = threading.main_thread().ident, []

    def task(item):
        started.append(item)
        if item == 0:
            signal.pthread_kill(main, signal.SIGINT)  # as a terminal's Ctrl-C reaches the main thread
        time.sleep(0.3)

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        each(task, range(10), 2, "genaudit-test")
    assert len(started) <= 3 and time.perf_counter() - start < 1.5
