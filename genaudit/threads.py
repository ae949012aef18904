"""One thread budget per process: numpy's and scipy's BLAS/OpenMP pools work within the budget onnxruntime gets.

BLAS libraries start one thread per core and keep them spinning between calls; on a machine whose cores are busy
(a shared CI runner, a sweep with `--jobs`) a 1000×64 SVD then took 0.27 s instead of 0.0065 s (measured with
two busy processes on this 2-core machine), while the matrices genaudit multiplies (at most 2,000 × 2,000 in the
neighbour searches) gain 5% from a second BLAS thread on idle cores. So the BLAS pools get one thread unless the
audit is given an explicit thread count (`threads`: then BLAS and onnxruntime both get that many).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def blas_threads(threads: int | None) -> int:
    """The BLAS/OpenMP threads of an audit given `threads` onnxruntime threads (None: onnxruntime's default)."""
    return 1 if threads is None else max(1, threads)


@contextmanager
def budget(threads: int | None) -> Iterator[None]:
    """Within the block, numpy/scipy's BLAS and OpenMP pools use `blas_threads(threads)` threads; the previous
    limits are restored after it (a library call does not change its caller's process for good)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads(threads)):
        yield


def one_blas_thread_at_start() -> None:
    """For the `genaudit` command's own process, before numpy loads: its BLAS pool starts with the one thread the
    budget gives it by default, instead of one per core that spin while numpy loads and between the calls made
    before an audit's budget applies (about 0.2 of the 2.4 CPU-s of a 2,000-sample audit on two cores).
    `budget(threads)` still raises it to `threads` within an audit, and the user's own OPENBLAS_NUM_THREADS wins.
    Not for the library: an `import genaudit` leaves its caller's process as it is."""
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def workers(threads: int | None) -> int:
    """How many threads of its own an audit given `threads` onnxruntime threads may keep busy at once (None: one
    per core this process may run on, as onnxruntime's default): the diagnostics' lanes (`registry.run`), the
    neighbour searches (`neighbours.search_all`) and the patch space's encoding (`genaudit.patches`). Each runs
    numpy with the BLAS budget above, and none spins while it waits."""
    import os

    if threads is not None:
        return max(1, threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def blas_callers(threads: int | None) -> int:
    """How many of an audit's threads may run one BLAS product each side by side within its budget: `workers`
    divided among the BLAS threads each call starts (two threads each calling a 2-thread OpenBLAS are slower than
    one: the calls wait for each other)."""
    return max(1, workers(threads) // blas_threads(threads))


def wait(futures: list, first_error: bool = False) -> None:
    """Wait until every future is done (or, with `first_error`, until one has failed), waking every 0.1 s so that
    a Ctrl-C reaches the waiting thread at once: a plain `Future.result()` wait is not woken by a signal."""
    import concurrent.futures

    while not all(f.done() for f in futures):
        concurrent.futures.wait(futures, timeout=0.1, return_when=concurrent.futures.FIRST_EXCEPTION)
        if first_error and any(f.done() and not f.cancelled() and f.exception() for f in futures):
            return


def each(function: Callable[[T], None], items: Iterable[T], threads: int, name: str) -> None:
    """`function(item)` for every item, on up to `threads` threads of their own (in this thread when 1); returns
    when all are done and raises the first error, in item order. An error or a Ctrl-C drops the items not started
    yet (those running finish first)."""
    items = list(items)
    threads = min(threads, len(items))
    if threads <= 1:
        for item in items:
            function(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            wait(futures, first_error=True)
        finally:
            for f in futures:  # the items not started yet, after an error or a Ctrl-C
                f.cancel()
        wait(futures)
    for f in futures:
        if not f.cancelled() and f.exception() is not None:
            raise f.exception()
