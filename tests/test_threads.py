"""The thread budget: numpy's BLAS pools run with one thread during an audit (or the audit's explicit thread
count), and the caller's limits come back afterwards; the command's own process starts them with one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import genaudit
from conftest import SAMPLE_MODELS
from genaudit import pipeline
from genaudit.threads import blas_callers, blas_threads, budget, workers


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


def test_blas_callers_keep_the_threads_times_blas_threads_within_the_budget():
    assert blas_callers(None) == workers(None)  # one BLAS thread each: one caller per core
    assert blas_callers(1) == 1 and blas_callers(2) == 1 and blas_callers(8) == 1  # each call has the budget
    assert all(blas_callers(t) * blas_threads(t) <= max(workers(t), 1) for t in (None, 1, 2, 3, 8))


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


_PROBE = """
import json, os
import {module}
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

def blas():
    np.ones(1) @ np.ones(1)
    return sorted({{p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}})

start = blas()
with threadpool_limits(limits=2):  # what budget(2) does for --threads 2
    raised = blas()
print(json.dumps([os.environ.get("OPENBLAS_NUM_THREADS"), start, raised]))
"""


def _probe(module: str, **env: str) -> list:
    """In a fresh process that imports `module` first: OPENBLAS_NUM_THREADS, numpy's BLAS threads, and those threads
    within a limit of 2."""
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", _PROBE.format(module=module)], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_command_starts_numpys_blas_with_one_thread_and_an_audit_can_still_raise_it():
    variable, start, raised = _probe("genaudit.cli")
    assert variable == "1" and start == [1]  # no pool of spinning threads while numpy loads
    two = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    assert raised == [two]  # --threads 2 still gets two BLAS threads (where there are two cores)


def test_the_users_own_blas_setting_wins_and_the_library_leaves_the_process_alone():
    assert _probe("genaudit.cli", OPENBLAS_NUM_THREADS="2")[0] == "2"
    assert _probe("genaudit")[0] is None  # import genaudit sets nothing
