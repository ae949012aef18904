"""Label-free early stopping for a model being trained (no validation set): every few epochs, export the model
to ONNX, audit it on a fixed training subsample, keep the best checkpoint, and say when to stop — when
memorization sets in (the estimate falls below its peak while training accuracy keeps rising) or when the
estimate has stopped improving. For a hand-written PyTorch loop:

    monitor = genaudit.training.AuditMonitor((x_train, y_train), samples=1000, patience=3)
    for epoch in range(100):
        train_one_epoch(model)
        if monitor.step(model, epoch):
            break
    print(monitor.best_path, monitor.reason)   # the best epoch's ONNX file, and why training stopped

Lightning users add `genaudit.integrations.lightning.GenauditCallback`, which wraps this class.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from genaudit.comparison import check_rank_metric, early_stopping
from genaudit.data import Dataset
from genaudit.metrics import BY_NAME, PRIMARY, tracked_values
from genaudit.models.torch_formats import export_module
from genaudit.options import AuditOptions, DataOptions, build
from genaudit.pipeline import audit_dataset


class AuditMonitor:
    """Audits a model in training every `every` epochs on the same training samples and decides when to stop.

    data: the training data to audit on (arrays `(x, y)`, `{"x", "y"}`, or any `--data` spec), loaded and
      subsampled once (`samples`, default 2000, seeded); pass the *given* training labels, noisy as they are.
    monitor: the metric that picks the best epoch (default the estimate of held-out accuracy); its better
      direction comes from its declaration.
    patience: stop after this many audits without an improvement of more than `min_delta` (0 = never on that).
    stop_on_memorization: stop when memorization sets in: the monitored value falls more than `tolerance`
      below its peak while training accuracy keeps rising (needs labels).
    dirpath: where the audited ONNX exports go; only the best one is kept unless `keep_all`. Default: a new
      temporary folder (`genaudit-monitor-*` in the system's temp folder), deleted with the exports in it by
      `close()`, when the monitor is garbage-collected, or when the process exits: pass a `dirpath` to keep the
      best export. A folder given here is never deleted.
    example_input: a batch the model takes, for the ONNX export (default: two preprocessed samples of `data`).
    options: the audit's and the data's options, as for `genaudit.audit` (e.g. `samples=1000`,
      `preprocess="mnist"`, `layer=...`).
    """

    def __init__(self, data: Any, *, every: int = 1, monitor: str = PRIMARY, patience: int = 3,
                 min_delta: float = 0.0, tolerance: float = 0.01, stop_on_memorization: bool = True,
                 dirpath: str | Path | None = None, keep_all: bool = False, example_input: Any = None,
                 **options) -> None:
        check_rank_metric(monitor)
        if every < 1 or patience < 0:
            raise ValueError("every must be at least 1 and patience at least 0")
        data_opts, self.opts = build(options, DataOptions, AuditOptions)
        self.dataset: Dataset = data_opts.load(data, self.opts.seed)
        self._data, self._options = data, options  # for `suspects`, which audits the same samples
        self.every, self.patience, self.min_delta, self.tolerance = every, patience, min_delta, tolerance
        self.metric = BY_NAME[monitor]
        self.stop_on_memorization, self.keep_all, self.example_input = stop_on_memorization, keep_all, example_input
        if dirpath is None:  # ours: removed by close(), on garbage collection or at exit, whichever comes first
            self.dirpath = Path(tempfile.mkdtemp(prefix="genaudit-monitor-"))
            self._remove: weakref.finalize | None = weakref.finalize(self, shutil.rmtree, self.dirpath,
                                                                     ignore_errors=True)
        else:
            self.dirpath = Path(dirpath)
            self.dirpath.mkdir(parents=True, exist_ok=True)
            self._remove = None
        self.history: list[dict] = []   # one entry per audit: epoch, the tracked numbers, the export's path
        self.best: dict | None = None   # the history entry of the best epoch so far
        self.reason: str | None = None  # why training should stop (None: keep going)

    def close(self) -> None:
        """Delete the temporary folder the monitor made and the exports in it, once training is over (the monitor
        audits no more after it); a `dirpath` given is kept."""
        if self._remove is not None:
            self._remove()

    @property
    def best_path(self) -> Path | None:
        """The ONNX export of the best epoch so far."""
        return None if self.best is None else Path(self.best["path"])

    @property
    def latest(self) -> dict[str, float]:
        """The tracked numbers of the last audit (estimate, its interval, training accuracy, memorized, ...)."""
        return {k: v for k, v in self.history[-1].items() if k not in ("epoch", "path")} if self.history else {}

    @property
    def improved(self) -> bool:
        """Whether the last audit is the best so far."""
        return bool(self.history) and self.best is self.history[-1]

    def due(self, epoch: int) -> bool:
        """Whether `epoch` (0-based) is one the monitor audits."""
        return (epoch + 1) % self.every == 0

    def _oriented(self, entry: dict) -> float | None:
        return self.metric.better.oriented(entry.get(self.metric.name))

    def _example(self, model):
        import torch

        example = self.example_input
        if example is None:  # two training samples, preprocessed as the audit feeds them
            example = next(self.dataset.batches(2, self.opts.layout or "nchw"))
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
        return torch.as_tensor(example, dtype=torch.float32).to(device)

    def step(self, model, epoch: int) -> bool:
        """Audit `model` (an eager torch module) if `epoch` is due; return whether training should stop (the
        reason is in `reason`). Epochs not due return False without any work."""
        if not self.due(epoch):
            return False
        path = self.dirpath / f"epoch_{epoch}.onnx"
        export_module(model, self._example(model), path)
        entry = {"epoch": epoch, **tracked_values(audit_dataset(path, self.dataset, self.opts)), "path": str(path)}
        self.history.append(entry)
        value = self._oriented(entry)
        previous = self.best
        if value is not None and (previous is None or value > self._oriented(previous) + self.min_delta):
            self.best = entry
        if not self.keep_all:  # keep only the best epoch's export
            kept = self.best["path"] if self.best else None
            for candidate in (previous["path"] if previous else None, str(path)):
                if candidate is not None and candidate != kept:
                    Path(candidate).unlink(missing_ok=True)
        self.reason = self._stop_reason()
        return self.reason is not None

    def suspects(self, top: int = 20) -> dict:
        """The audited training samples ranked by suspicion across every audited epoch: `genaudit.suspects` of
        the run's exports, on the same samples and options (the neighbours' disagreement and the run's doubt of
        each label, and where the neighbours are weak judges the last epoch's doubt on shifted images:
        docs/suspects.md). Needs `keep_all=True` and at least one audit."""
        from genaudit.suspects import suspects

        if not self.keep_all:
            raise ValueError("suspects reads every audited epoch's export: create the monitor with keep_all=True")
        if not self.history:
            raise ValueError("no epoch audited yet")
        return suspects([e["path"] for e in self.history], self._data, top=top, order="given", **self._options)

    def _stop_reason(self) -> str | None:
        """Why to stop after the audits so far: memorization first, then `patience` audits without improvement."""
        name = self.metric.name
        if self.stop_on_memorization:
            stop = early_stopping([self._oriented(e) for e in self.history],
                                  [e.get("clean_accuracy") for e in self.history], self.tolerance, name)
            if stop["memorization_onset"] is not None:
                onset = self.history[stop["memorization_onset"]]["epoch"]
                return f"memorization set in at epoch {onset}: {stop['evidence']}"
        if self.patience and self.best is not None:
            since = len(self.history) - 1 - self.history.index(self.best)
            if since >= self.patience:
                return (f"{name} has not improved for {since} audits (best {self.best[name]:.3f} at epoch "
                        f"{self.best['epoch']})")
        return None

    def state_dict(self) -> dict:
        """What a resumed run needs: the audits so far and the best one."""
        return {"history": self.history, "best_epoch": None if self.best is None else self.best["epoch"]}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.best = next((e for e in self.history if e["epoch"] == state["best_epoch"]), None)
        self.reason = self._stop_reason() if self.history else None
