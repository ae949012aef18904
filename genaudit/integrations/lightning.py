"""A Lightning callback for label-free early stopping (`pip install 'genaudit[lightning]'`).

    from genaudit.integrations.lightning import GenauditCallback

    audit = GenauditCallback((x_train, y_train), samples=1000, patience=3)
    trainer = lightning.Trainer(max_epochs=100, callbacks=[audit])
    trainer.fit(model, train_loader)               # no validation loader needed
    audit.best_model_path, audit.reason            # the best epoch's checkpoint, and why training stopped

Every `every_n_epochs` epochs it exports the LightningModule to ONNX, audits it on the fixed training subsample
(`genaudit.training.AuditMonitor`), logs the tracked numbers as `genaudit/<name>` with `log_dict` (so every
logger the trainer has receives them, and `ModelCheckpoint`/`EarlyStopping` can monitor `genaudit/estimate`),
saves a checkpoint of the best epoch, and sets `trainer.should_stop` when memorization sets in or the estimate
stops improving. Under DDP the audit runs on global rank 0 and its decision is broadcast to every rank. With
`keep_all=True` every audited epoch's export is kept, and `audit.monitor.suspects()` ranks the training samples
by how likely their label is wrong across the whole run (docs/suspects.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone pytorch_lightning package
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError:
        raise ImportError("GenauditCallback needs Lightning: pip install 'genaudit[lightning]'") from None

from genaudit.training import AuditMonitor


class GenauditCallback(Callback):
    """Audit the model every `every_n_epochs` epochs on training data; log, keep the best, stop early.

    data and options: as for `genaudit.training.AuditMonitor` (the training data with its given labels; any
    `genaudit.audit` option such as `samples=1000`). stop_training: False only logs and keeps the best
    checkpoint. dirpath: where the best checkpoint and ONNX export go (default `<default_root_dir>/genaudit`).
    The ONNX export traces the module's `example_input_array` when it has one, else two samples of `data`.
    """

    def __init__(self, data: Any, *, every_n_epochs: int = 1, stop_training: bool = True,
                 dirpath: str | Path | None = None, **options) -> None:
        super().__init__()
        self._data, self._options, self._every, self._dirpath = data, options, every_n_epochs, dirpath
        self.stop_training = stop_training
        self.monitor: AuditMonitor | None = None
        self.best_model_path: str | None = None  # a Lightning checkpoint of the best audited epoch
        self._state: dict | None = None

    @property
    def reason(self) -> str | None:
        """Why training stopped (or should stop); None while it should go on."""
        return None if self.monitor is None else self.monitor.reason

    @property
    def best_onnx_path(self) -> Path | None:
        """The ONNX export of the best audited epoch (what genaudit audited)."""
        return None if self.monitor is None else self.monitor.best_path

    def _folder(self, trainer) -> Path:
        """Where the best checkpoint and the ONNX exports go."""
        return Path(self._dirpath or Path(trainer.default_root_dir) / "genaudit")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.monitor is None and trainer.is_global_zero:
            self.monitor = AuditMonitor(self._data, every=self._every, dirpath=self._folder(trainer), **self._options)
            if self._state is not None:
                self.monitor.load_state_dict(self._state)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self._every:
            return
        decision = (False, {}, False)
        if trainer.is_global_zero:
            monitor = self.monitor
            if getattr(pl_module, "example_input_array", None) is not None and monitor.example_input is None:
                monitor.example_input = pl_module.example_input_array
            stop = monitor.step(pl_module, epoch)
            decision = (stop, monitor.latest, monitor.improved)
        stop, values, improved = trainer.strategy.broadcast(decision, src=0)
        if values:
            pl_module.log_dict({f"genaudit/{name}": value for name, value in values.items()}, on_step=False,
                               on_epoch=True)
        if improved:  # every rank takes part in saving (a collective under DDP)
            path = str(self._folder(trainer) / "best.ckpt")
            # a full checkpoint (optimizer, loops, callbacks: training resumes from it); said explicitly, since
            # Lightning logs "`weights_only` was not set" on every save that leaves it unset
            trainer.save_checkpoint(path, weights_only=False)
            self.best_model_path = path
        if stop and self.stop_training:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"monitor": None if self.monitor is None else self.monitor.state_dict(),
                "best_model_path": self.best_model_path}

    def load_state_dict(self, state_dict: dict) -> None:
        self._state = state_dict.get("monitor")
        self.best_model_path = state_dict.get("best_model_path")
        if self.monitor is not None and self._state is not None:
            self.monitor.load_state_dict(self._state)
