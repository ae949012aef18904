"""Label-free early stopping on a real short training run: a tiny MLP on the shipped MNIST sample with half of
its 500 training labels corrupted, so memorization sets in within seconds; held-out accuracy is measured on the
other 500 (clean) samples, which the monitor never sees."""

from __future__ import annotations

import csv
import gc
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from genaudit.errors import GenauditError
from genaudit.training import AuditMonitor

EPOCHS = 25


def _study():
    """zoo/study_early_stopping.py: the training run the README's numbers come from."""
    spec = importlib.util.spec_from_file_location("study_early_stopping", REPO / "zoo" / "study_early_stopping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _study()


@pytest.fixture(scope="module")
def noisy():
    return study.noisy_sample()


def test_plain_loop_stops_near_the_held_out_peak(tmp_path):
    """The whole run is trained (to see the held-out curve after the stop); the monitor's advice is checked
    against it: it stops, before the end, and the epoch it kept then is within 0.03 of the best held-out
    accuracy of the whole run."""
    result = study.run(EPOCHS, tmp_path)
    held = [r["held_out"] for r in result["rows"]]
    assert result["stopped"] is not None and result["stopped"] < EPOCHS - 1, result["reason"]
    assert "memorization set in" in result["reason"] or "not improved" in result["reason"]
    assert held[result["best"]] >= max(held) - 0.03, (result["best"], held)
    assert held[result["best"]] > held[-1] + 0.1  # stopping mattered: the last epoch generalizes far worse
    assert result["model"].training  # the export left the model in training mode
    best = result["monitor"].best["epoch"]
    assert [p.name for p in tmp_path.iterdir()] == [f"epoch_{best}.onnx"]  # only the best export is kept
    assert set(result["rows"][-1]) >= {"estimate", "estimate_low", "estimate_high", "clean_accuracy", "memorized"}


def test_monitor_audits_only_due_epochs_and_resumes(noisy, tmp_path):
    x, y, _, _ = noisy
    monitor = AuditMonitor((x, y), samples=200, every=2, patience=1, dirpath=tmp_path, keep_all=True)
    model = study.mlp()
    assert monitor.step(model, 0) is False and monitor.history == []  # epoch 0 is not due with every=2
    monitor.step(model, 1)
    assert [e["epoch"] for e in monitor.history] == [1] and monitor.improved
    assert monitor.step(model, 3) is True and "not improved for 1 audits" in monitor.reason  # same weights
    again = AuditMonitor((x, y), samples=200, every=2, patience=1, dirpath=tmp_path)
    again.load_state_dict(monitor.state_dict())
    assert again.best_path == monitor.best_path and again.reason == monitor.reason
    assert len(list(tmp_path.glob("*.onnx"))) == 2  # keep_all


def test_suspects_across_the_audited_epochs(tmp_path):
    """With keep_all, the monitor ranks the training samples by suspicion across every audited epoch: half the
    labels are wrong, the run's suspicion finds them (AUROC > 0.9) and better than its last epoch's alone, which by
    then fits many of them; without keep_all it says what it needs."""
    from genaudit.suspects import suspects

    sys.path.insert(0, str(REPO / "zoo"))
    from study_suspects_cifar import auroc

    result = study.run(12, tmp_path, keep_all=True, patience=0, stop_on_memorization=False)
    x, y, _, _ = study.noisy_sample()
    truth = np.load(study.SAMPLE)["y"][np.random.default_rng(0).permutation(1000)[:500]]  # as noisy_sample drew

    def found(document) -> float:
        index = np.array([row["index"] for row in document["rows"]])
        return auroc(np.array([row["suspicion"] for row in document["rows"]]), (y != truth)[index])

    run = result["monitor"].suspects()
    assert [c["path"] for c in run["checkpoints"]] == [e["path"] for e in result["monitor"].history]
    alone = found(suspects(result["monitor"].history[-1]["path"], (x, y), samples=500))
    assert found(run) > max(0.9, alone), (found(run), alone)
    with pytest.raises(ValueError, match="keep_all"):
        AuditMonitor((x, y), samples=100).suspects()


def test_the_temporary_folder_goes_with_the_monitor(noisy, tmp_path):
    """Without a dirpath the exports go to a folder of the monitor's own, deleted by close(), when the monitor is
    garbage-collected, or at exit; a dirpath given (even one the monitor had to create) is kept."""
    x, y, _, _ = noisy
    closed = AuditMonitor((x, y), samples=100)
    (closed.dirpath / "epoch_0.onnx").write_bytes(b"export")
    assert closed.dirpath.name.startswith("genaudit-monitor-")
    closed.close()
    assert not closed.dirpath.exists()
    collected = AuditMonitor((x, y), samples=100)
    folder = collected.dirpath
    del collected
    gc.collect()
    assert not folder.exists()
    given = AuditMonitor((x, y), samples=100, dirpath=tmp_path / "exports")
    given.close()
    del given
    gc.collect()
    assert (tmp_path / "exports").is_dir()


def test_the_temporary_folder_goes_at_exit(tmp_path):
    """A monitor still referenced when the interpreter exits (a script's global) leaves no folder behind."""
    script = ("import numpy as np\n"
              "from genaudit.training import AuditMonitor\n"
              "monitor = AuditMonitor((np.zeros((20, 1, 8, 8), np.uint8), np.arange(20) % 2), samples=20)\n"
              "(monitor.dirpath / 'epoch_0.onnx').write_bytes(b'export')\n"
              "print(monitor.dirpath)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == tmp_path and folder.name.startswith("genaudit-monitor-")
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def test_monitor_refuses_a_descriptive_metric_and_an_unexportable_model(noisy):
    import torch

    x, y, _, _ = noisy
    with pytest.raises(GenauditError):
        AuditMonitor((x, y), samples=100, monitor="no_such_metric")
    monitor = AuditMonitor((x, y), samples=100, example_input=np.zeros((2, 5), np.float32))
    with pytest.raises(GenauditError, match="could not be exported to ONNX"):
        monitor.step(study.mlp(), 0)  # the example does not fit the model
    assert torch.is_grad_enabled()


def test_lightning_callback_logs_keeps_the_best_and_stops(noisy, tmp_path, caplog, recwarn, monkeypatch):
    pytest.importorskip("lightning")  # the [lightning] extra; the test extra installs it
    import lightning
    import torch

    from genaudit.integrations.lightning import GenauditCallback

    x, y, held_x, held_y = noisy
    torch.set_num_threads(1)

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = study.mlp()
            self.example_input_array = torch.zeros(2, 1, 28, 28)

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, _):
            inputs, targets = batch
            return torch.nn.functional.cross_entropy(self(inputs), targets)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class HeldOut(lightning.Callback):  # the test's own yardstick, not seen by genaudit
        accuracy: list = []

        def on_train_epoch_end(self, trainer, module):
            self.accuracy.append(study.accuracy(module.net, held_x, held_y))

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(y)),
        batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0))
    audit, held = GenauditCallback((x, y), samples=500), HeldOut()
    # Lightning's own log (it stops at its logger unless the root logger had handlers when it was imported)
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        trainer = lightning.Trainer(max_epochs=EPOCHS, callbacks=[held, audit], default_root_dir=tmp_path,
                                    logger=lightning.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                                    enable_model_summary=False, accelerator="cpu", deterministic=True)
        lightning.seed_everything(0, verbose=False)
        trainer.fit(Classifier(), loader)
    # saving the best checkpoint says what it saves: no "`weights_only` was not set" line, nor a torch warning
    assert "GPU available" in caplog.text and "weights_only" not in caplog.text
    assert not [w for w in recwarn if "weights_only" in str(w.message)]

    assert trainer.current_epoch < EPOCHS, "the callback stopped training early"
    assert audit.reason is not None and audit.best_onnx_path.exists()
    best = audit.monitor.best["epoch"]
    assert held.accuracy[best] >= max(held.accuracy) - 0.03, (best, held.accuracy)
    restored = torch.load(audit.best_model_path, weights_only=True)  # plain tensors and containers: safe to load
    assert restored["epoch"] == best and "GenauditCallback" in str(restored["callbacks"])
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("genaudit/estimate")]
    assert len(rows) == len(audit.monitor.history) == trainer.current_epoch
    assert {"genaudit/clean_accuracy", "genaudit/memorized", "genaudit/estimate_low"} <= set(rows[0])
