"""Values made once per key, also when threads ask for them at once (the diagnostics' lanes, the neighbour
searches made side by side): what an audit shares between its diagnostics (`registry.Context`) and what audits
of one data set share (`data.Dataset.derived`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Memo:
    """A key -> value store whose `get(key, make)` calls `make()` once per key. Each key has its own lock: a
    thread asking for a key another is making waits for that value, while different keys are made side by side."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.RLock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            if key not in self._values:
                self._values[key] = make()
            return self._values[key]

    def __getstate__(self) -> dict:  # a Dataset sent to a worker process (`--jobs`) takes the values, not the locks
        return {"values": dict(self._values)}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._values.update(state["values"])

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._values))
