"""genaudit.derived: arrays computed from the samples alone, kept on disk by digest, never unpickled."""

from __future__ import annotations

import numpy as np

from genaudit import derived


def test_digest_depends_on_every_part():
    base = derived.digest(b"\x00\x01", "input", 0, (2, 3))
    assert derived.digest(b"\x00\x01", "input", 0, (2, 3)) == base
    for other in [(b"\x00\x02", "input", 0, (2, 3)), (b"\x00\x01", "patches", 0, (2, 3)),
                  (b"\x00\x01", "input", 1, (2, 3)), (b"\x00\x01", "input", 0, (3, 2)), (b"\x00", b"\x01input", 0)]:
        assert derived.digest(*other) != base


def test_store_and_load_round_trip_checked_and_bounded(tmp_path):
    arrays = {"a0": np.arange(5), "b0": np.linspace(0, 1, 5)}
    derived.store(tmp_path / "x.npz", arrays, keep=2)
    back = derived.load(tmp_path / "x.npz", lambda a: len(a["a0"]) == 5)
    assert back is not None and all(np.array_equal(back[k], v) for k, v in arrays.items())
    assert derived.load(tmp_path / "x.npz", lambda a: len(a["a0"]) == 4) is None  # fails the caller's check
    assert derived.load(tmp_path / "x.npz", lambda a: a["missing"] is None) is None  # a missing array: no entry
    assert derived.load(tmp_path / "absent.npz", lambda a: True) is None
    np.savez(tmp_path / "pickled.npz", a0=np.array([{"code": 1}], dtype=object))  # would need unpickling
    assert derived.load(tmp_path / "pickled.npz", lambda a: True) is None
    for name in ("y", "z"):
        derived.store(tmp_path / f"{name}.npz", arrays, keep=2)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # the least recently used dropped


def test_an_unwritable_cache_only_costs_the_time(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    derived.store(blocked / "sub" / "x.npz", {"a0": np.arange(3)}, keep=2)  # cannot create the folder: no error
    assert not (blocked / "sub").exists()


def test_entries_are_read_one_at_a_time(tmp_path, monkeypatch):
    """np.load parses headers with ast.literal_eval, which CPython 3.11 cannot run in two threads at once
    (gh-106905); the searches made side by side load entries from several threads."""
    import threading

    path = tmp_path / "a.npz"
    derived.store(path, {"x": np.arange(3)}, keep=4)
    held, real = [], np.load

    def spy(*args, **kwargs):
        held.append(derived._READING.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    threads = [threading.Thread(target=derived.load, args=(path, lambda a: True)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert held == [True] * 4
