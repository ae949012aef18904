"""Label-free early stopping on a real short training run (genaudit.training.AuditMonitor).

A tiny MLP trains on 500 images of the shipped MNIST sample with half of their labels corrupted, so it starts
memorizing the wrong labels within seconds; its accuracy on the other 500 samples (clean labels, never shown to
genaudit) is the held-out truth. The whole run is trained so that the held-out curve after the stop is seen too.

    python zoo/study_early_stopping.py [--epochs 25]

Prints one row per epoch (held-out accuracy, the estimate and its 90% interval, training accuracy, the memorized
share, the monitor's decision), then where the monitor stopped and which epoch it kept. tests/test_training.py
runs the same study and checks the stop against the held-out curve.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "genaudit" / "sample_data" / "mnist_sample.npz"


def noisy_sample(seed: int = 0, train: int = 500, noise: float = 0.5):
    """(training images uint8, their corrupted labels, held-out images as a float tensor in [0,1], clean labels)."""
    import torch

    data = np.load(SAMPLE)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data["y"]))
    y = data["y"][order[:train]].copy()
    flip = rng.random(len(y)) < noise
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    held = order[train:]
    return data["x"][order[:train]], y, torch.tensor(data["x"][held] / 255.0, dtype=torch.float32), data["y"][held]


def mlp():
    """784-128-64-10 ReLU MLP (seeded)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                               torch.nn.ReLU(), torch.nn.Linear(64, 10))


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def run(epochs: int = 25, dirpath: Path | None = None, **monitor_options) -> dict:
    """Train the whole run with an AuditMonitor watching; returns the per-epoch rows, the first epoch at which
    the monitor said stop, the epoch it had kept then and why it stopped (None if it never did), the monitor and
    the model."""
    import torch

    from genaudit.training import AuditMonitor

    torch.set_num_threads(1)  # tiny model: one thread is faster, and deterministic
    x, y, held_x, held_y = noisy_sample()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(y)
    monitor = AuditMonitor((x, y), **{"samples": 500, "dirpath": dirpath, **monitor_options})
    rows, stopped, kept, reason = [], None, None, None
    for epoch in range(epochs):
        for batch in torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).split(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            opt.step()
        start = time.perf_counter()
        stop = monitor.step(model, epoch)
        rows.append({"epoch": epoch, "held_out": accuracy(model, held_x, held_y), **monitor.latest,
                     "seconds": time.perf_counter() - start, "stop": stop})
        if stop and stopped is None:  # what a loop that breaks here would have: the best so far, and why
            stopped, kept, reason = epoch, monitor.best["epoch"], monitor.reason
    return {"rows": rows, "stopped": stopped, "best": kept, "reason": reason, "monitor": monitor, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = run(args.epochs, Path(folder))
    print("epoch  held-out  estimate  (90% interval)  train acc  memorized  audit s  stop")
    for r in result["rows"]:
        print(f"{r['epoch']:5d}  {r['held_out']:8.3f}  {r['estimate']:8.3f}  ({r['estimate_low']:.3f}–"
              f"{r['estimate_high']:.3f})  {r['clean_accuracy']:9.3f}  {r['memorized']:9.3f}  {r['seconds']:7.2f}  "
              f"{'yes' if r['stop'] else ''}")
    held = [r["held_out"] for r in result["rows"]]
    best = result["best"]
    print(f"\nfirst stop: epoch {result['stopped']} ({result['reason']})")
    print(f"kept: epoch {best}, held-out {held[best]:.3f}; the run's best held-out {max(held):.3f} at epoch "
          f"{int(np.argmax(held))}; last epoch {held[-1]:.3f}")


if __name__ == "__main__":
    main()
