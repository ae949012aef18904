"""One thread budget per process: numpy's and scipy's BLAS/OpenMP pools work within the budget onnxruntime gets.

BLAS libraries start one thread per core and keep them spinning between calls; on a machine whose cores are busy
(a shared CI runner, a sweep with `--jobs`) a 1000×64 SVD then took 0.27 s instead of 0.0065 s (measured with
two busy processes on this 2-core machine), while the matrices genaudit multiplies (at most 2,000 × 2,000 in the
neighbour searches) gain 5% from a second BLAS thread on idle cores. So the BLAS pools get one thread unless the
audit is given an explicit thread count (`threads`: then BLAS and onnxruntime both get that many).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
