"""The diagnostics' lanes (`registry.run`): each kind (the neighbour votes, the head's curves, the layer's
statistics) runs in a thread of its own, a diagnostic waiting for the results it needs from another lane, and the
diagnostics block is the same, values and order, as when everything runs in one lane; an intermediate asked for
by two lanes at once is made once; the neighbour searches are made side by side."""

from __future__ import annotations

import json
import threading
import time

import pytest

import genaudit
from conftest import SAMPLE_MODELS
from genaudit.diagnostics import of_kind
from genaudit.options import AuditOptions, DataOptions, build
from genaudit.pipeline import trunk_pass
from genaudit.registry import Context, Diagnostic, run
from genaudit.threads import workers


def _context(model: str, **options) -> Context:
    data_opts, opts = build({"samples": 300, **options}, DataOptions, AuditOptions)
    dataset = data_opts.load("sample", opts.seed)
    done = trunk_pass(SAMPLE_MODELS / model, dataset, opts)
    return Context(done.fs, opts, done.cut, dataset, done.layout, done.spaces)


@pytest.mark.parametrize("model, options", [("mlp_clean.onnx", {}), ("cnn_clean.onnx", {"layer": "/relu2/Relu_output_0"}),
                                            ("mlp_random.onnx", {"labels": False})])
def test_two_lanes_give_the_diagnostics_block_of_one(model, options):
    kinds = of_kind("layer", "head", "space")
    assert {d.kind for d in kinds} == {"layer", "head", "space"}
    assert any(d.needs for d in kinds)  # a head curve reads the layer's selectivity
    one = run(kinds, _context(model, **options), workers=1)
    two = run(kinds, _context(model, **options), workers=2)
    assert json.dumps(two) == json.dumps(one)  # the same values in the same order
    assert "neighbours" in two and "ablation" in two


def _step(events: list, lock: threading.Lock, name: str, pause: float = 0.05):
    def compute(c):
        with lock:
            events.append((name, "start", threading.current_thread().name))
        time.sleep(pause)
        with lock:
            events.append((name, "end", threading.current_thread().name))
        return {"value": name}
    return compute


def test_the_lanes_run_at_the_same_time_keep_their_order_and_wait_for_what_they_need():
    events, lock = [], threading.Lock()
    diagnostics = [Diagnostic("a", "space", _step(events, lock, "a")),
                   Diagnostic("b", "layer", _step(events, lock, "b", pause=0.2)),
                   Diagnostic("c", "space", _step(events, lock, "c")),
                   Diagnostic("d", "head", _step(events, lock, "d")),
                   Diagnostic("e", "head", _step(events, lock, "e"), needs=("b",))]
    out = run(diagnostics, _context("mlp_clean.onnx"), workers=2)
    assert list(out) == ["a", "b", "c", "d", "e"] and out["c"] == {"value": "c"}
    threads = {name: thread for name, _, thread in events}
    assert threads["a"] == threads["c"] and threads["d"] == threads["e"]
    assert len({threads["a"], threads["b"], threads["d"]}) == 3  # one lane per kind
    order = [(name, what) for name, what, _ in events]
    assert order.index(("b", "start")) < order.index(("a", "end"))  # overlapped
    assert order.index(("d", "start")) < order.index(("b", "end"))
    assert order.index(("a", "end")) < order.index(("c", "start"))  # each lane in list order
    assert order.index(("b", "end")) < order.index(("e", "start"))  # e waited for b, in another lane


def test_an_intermediate_both_lanes_ask_for_is_made_once():
    context = _context("mlp_clean.onnx")
    made, barrier = [], threading.Barrier(2)

    def make():
        made.append(1)
        time.sleep(0.05)
        return object()

    def ask(c):
        barrier.wait()
        return {"id": id(c.shared("x", make))}

    out = run([Diagnostic("a", "space", ask), Diagnostic("b", "layer", ask)], context, workers=2)
    assert len(made) == 1 and out["a"] == out["b"]


def test_an_error_in_a_lane_reaches_the_caller_and_nobody_waits_for_it_forever():
    def fail(c):
        raise ValueError("from the lane")

    events, lock = [], threading.Lock()
    start = time.perf_counter()
    with pytest.raises(ValueError, match="from the lane"):
        run([Diagnostic("a", "space", fail), Diagnostic("b", "layer", _step(events, lock, "b")),
             Diagnostic("c", "head", _step(events, lock, "c"), needs=("a",))], _context("mlp_clean.onnx"), workers=2)
    assert time.perf_counter() - start < 5 and "c" not in {name for name, _, _ in events}


def test_the_budget_decides_the_lanes(monkeypatch, lane_workers):
    assert workers(1) == 1 and workers(3) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)  # pinned to one core
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert workers(None) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert workers(None) == 4
    genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=200, repeats=1, threads=1)
    genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=200, repeats=1)
    assert lane_workers == [1, 4]


def test_memo_makes_each_key_once_and_different_keys_side_by_side():
    import pickle

    from genaudit.memo import Memo

    memo, made = Memo(), []
    both = threading.Barrier(2, timeout=5)

    def make(key):
        def inner():
            made.append(key)
            if key != "same":
                both.wait()  # only returns if the other key is being made at the same time
            time.sleep(0.02)
            return key
        return inner

    threads = [threading.Thread(target=memo.get, args=(key, make(key))) for key in ("a", "b", "same", "same")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == ["a", "b", "same"] and memo.get("a", lambda: "other") == "a"
    copy = pickle.loads(pickle.dumps(memo))  # a Dataset sent to a worker process keeps the values
    assert sorted(copy) == ["a", "b", "same"] and copy.get("b", lambda: "other") == "b"


def test_the_first_vote_makes_every_search_side_by_side_with_the_same_values(monkeypatch, tmp_path):
    from genaudit.diagnostics import neighbours as N

    monkeypatch.setenv("GENAUDIT_CACHE", str(tmp_path))
    where = []
    real = N.nearest_neighbours
    monkeypatch.setattr(N, "nearest_neighbours",
                        lambda x, k, **kw: where.append(threading.current_thread().name) or real(x, k, **kw))
    cards = {}
    for count in (1, 2):
        monkeypatch.setattr(N, "workers", lambda threads, count=count: count)
        where.clear()
        cards[count] = genaudit.audit(SAMPLE_MODELS / "cnn_clean.onnx", "sample", samples=300, repeats=1,
                                      seed=count)  # another seed: nothing read from the other run's cache
        names = set(where)
        assert len(where) == 10  # input and patches with their curves' three each, early, features
        assert all(n.startswith("genaudit-search") for n in names) == (count == 2)
    again = genaudit.audit(SAMPLE_MODELS / "cnn_clean.onnx", "sample", samples=300, repeats=1, seed=2)
    assert json.dumps(again["diagnostics"]["neighbours"]) == json.dumps(cards[2]["diagnostics"]["neighbours"])
    monkeypatch.setattr(N, "workers", lambda threads: 1)
    tmp = tmp_path / "other"
    monkeypatch.setenv("GENAUDIT_CACHE", str(tmp))
    alone = genaudit.audit(SAMPLE_MODELS / "cnn_clean.onnx", "sample", samples=300, repeats=1, seed=2)
    assert json.dumps(alone["diagnostics"]) == json.dumps(cards[2]["diagnostics"])
    assert alone["estimate"] == cards[2]["estimate"]


def test_the_registry_declares_what_each_diagnostic_reads_from_another_lane():
    """Every layer diagnostic slowed down: a head diagnostic reading one of their results without declaring it in
    `needs` would find it missing; the block is still the one lane's."""
    from dataclasses import replace

    def slowed(d):
        def compute(c):
            time.sleep(0.05)
            return d.compute(c)
        return replace(d, compute=compute) if d.kind == "layer" else d

    kinds = of_kind("layer", "head", "space")
    one = run(kinds, _context("cnn_clean.onnx"), workers=1)
    two = run([slowed(d) for d in kinds], _context("cnn_clean.onnx"), workers=2)
    assert json.dumps(two) == json.dumps(one)


def test_ctrl_c_while_waiting_for_the_other_lanes_stops_them_after_their_diagnostic():
    import signal

    ran, main = [], threading.main_thread().ident

    def interrupt(c):
        time.sleep(0.1)  # the first lane is done and waiting by now
        signal.pthread_kill(main, signal.SIGINT)  # as a terminal's Ctrl-C reaches the main thread
        time.sleep(0.4)  # this diagnostic is still running when the interrupt is seen
        return {"v": 1}

    def long(c):
        ran.append("long")
        time.sleep(2)
        return {"v": 2}

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run([Diagnostic("a", "space", lambda c: {"v": 0}), Diagnostic("b", "layer", interrupt),
             Diagnostic("c", "layer", long)], _context("mlp_clean.onnx"), workers=2)
    assert ran == [] and time.perf_counter() - start < 1.5
