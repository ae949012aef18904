"""Where a series of audits runs: in this process, in a pool of local processes, or as Ray tasks on a cluster.

Every backend runs `task(model, *shared)` once per model and returns the results in the models' order, with the
models whose task failed listed beside them (a failure names its model and never loses the others' results).
`shared` is what every task reads (the data set): a local pool pickles it to each process; Ray puts it in the
object store once and every task reads it from there.

    results, failures = run_tasks(audit_task, paths, (dataset, opts), RunOptions(backend="ray"), progress)
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from genaudit.errors import GenauditError, first_line
from genaudit.options import AuditOptions, RunOptions

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Failure:
    """A model whose audit failed, and why (the message a user error would print)."""

    model: str
    error: str

    def as_dict(self) -> dict:
        return {"model": self.model, "error": self.error}


def _guarded(args: tuple) -> tuple[Any, str | None]:
    """Run one task; a user error (bad model, wrong classes, ...) becomes its message instead of an exception."""
    task, model, shared = args
    try:
        return task(model, *shared), None
    except GenauditError as exc:
        return None, str(exc)


def _with_threads(shared: tuple, threads: int) -> tuple:
    """`shared` with every AuditOptions in it set to run on `threads` intra-op threads (unless already set)."""
    return tuple(replace(s, threads=threads) if isinstance(s, AuditOptions) and s.threads is None else s
                 for s in shared)


def _local(task: Callable, models: list[Path], shared: tuple, jobs: int, progress: Progress | None) -> list:
    import multiprocessing

    jobs = min(jobs, len(models))  # never more processes than models
    if jobs > 1:
        shared = _with_threads(shared, max(1, (os.cpu_count() or 1) // jobs))  # the processes share the cores
    work = [(task, m, shared) for m in models]
    outcomes = []

    def collect(results) -> list:
        for outcome in results:
            outcomes.append(outcome)
            if progress is not None:
                progress(len(outcomes), len(models))
        return outcomes

    if jobs <= 1:
        return collect(map(_guarded, work))
    # Workers ignore Ctrl-C: the parent gets it alone and stops them all (leaving the pool terminates them).
    with multiprocessing.Pool(jobs, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        return collect(pool.imap(_guarded, work))


def _ray(task: Callable, models: list[Path], shared: tuple, run: RunOptions, progress: Progress | None) -> list:
    import logging

    import ray

    started = not ray.is_initialized()
    if started:  # join RAY_ADDRESS / --ray-address, else start a local instance for this run
        try:
            ray.init(address=run.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise GenauditError(
                f"--backend ray could not start or join a Ray cluster (address {run.ray_address or 'default'}): "
                f"{first_line(exc, None)}. Start one with `ray start --head`, or fix "
                "--ray-address / RAY_ADDRESS."
            ) from None
    try:
        refs = [ray.put(s) for s in _with_threads(shared, run.task_cpus)]  # once, read by every task
        remote = ray.remote(num_cpus=run.task_cpus)(_ray_task)
        pending = {remote.remote(task, m, *refs): i for i, m in enumerate(models)}
        outcomes: list = [None] * len(models)
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                outcomes[i] = ray.get(ready[0])
            except Exception as exc:  # a crashed worker, a lost node, an unexpected error: this model only
                cause = getattr(exc, "cause", None) or exc
                outcomes[i] = (None, f"{type(cause).__name__}: {first_line(cause, None)}")  # minus Ray's traceback
            done += 1
            if progress is not None:
                progress(done, len(models))
        return outcomes
    finally:
        if started:
            ray.shutdown()


def _ray_task(task: Callable, model: Path, *shared) -> tuple[Any, str | None]:
    """One model's task on a Ray worker (the object-store arguments arrive resolved)."""
    if not Path(model).exists():
        import socket

        return None, (f"the model file is not on the worker node {socket.gethostname()}: put the checkpoints on "
                      "storage every node mounts (or run from the head node)")
    return _guarded((task, model, shared))


def run_tasks(task: Callable, models: list[Path], shared: tuple, run: RunOptions = RunOptions(),
              progress: Progress | None = None) -> tuple[list, list[Failure]]:
    """Run `task(model, *shared)` for every model on the chosen backend (`run` checked by the caller, before its
    expensive work). Returns (results in the models' order, None where the task failed; the failures). `task`
    must be importable (a module-level function)."""
    if run.backend == "ray":
        outcomes = _ray(task, models, shared, run, progress)
    else:
        outcomes = _local(task, models, shared, run.jobs, progress)
    failures = [Failure(str(m), error) for m, (_, error) in zip(models, outcomes) if error is not None]
    return [result for result, _ in outcomes], failures


def succeeded(models: list[Path], results: list, failures: list[Failure]) -> tuple[list[Path], list]:
    """The models whose task succeeded and their results, in order (from `run_tasks`); no model succeeding is a
    user error naming each with its reason."""
    if len(failures) == len(models):
        raise GenauditError("No model could be audited: " + "; ".join(f"{f.model}: {f.error}" for f in failures))
    kept = [(m, r) for m, r in zip(models, results) if r is not None]
    return [m for m, _ in kept], [r for _, r in kept]
