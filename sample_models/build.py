#!/usr/bin/env python
"""Build genaudit's shipped sample data set and sample models from real MNIST.

Run from the repository root:

    python sample_models/build.py --mnist-root ../shared/data/torchvision

It reads MNIST in torchvision's layout (``<root>/MNIST/raw``, no download), and writes

* ``genaudit/sample_data/mnist_sample.npz`` (+ README.md): 1,000 training images, 100 per class;
* ``sample_models/``: small MLP / CNN classifiers trained on true or random labels, each exported as
  scripted TorchScript (.pt), traced TorchScript (.traced.pt), ONNX (.onnx) and torch.export (.pt2),
  plus a few extra files used by the tests, ``models.json`` and ``README.md``.

Everything is seeded and runs on the CPU with deterministic algorithms, so a rebuild gives the same
weights and accuracies on the same torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0                    # selects the images (sample, training subset) and seeds every training run
SAMPLE_PER_CLASS = 100      # shipped sample: 100 per class -> 1,000 images
TRAIN_PER_CLASS = 1000      # training subset of the clean models: 1,000 per class -> 10,000 images
                            # (with 500/class the MLP only reached ~91% on the first 2,000 test images)
N_TEST = 2000               # held-out test images: the first 2,000 of the MNIST test split
N_CHECK = 64                # sample images used to compare exported models with the eager model
TOL = 1e-4                  # max abs difference allowed between exported and eager logits
OPSET = 17

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLE_DIR = REPO / "genaudit" / "sample_data"


# ----------------------------------------------------------------------------------------------- models
class MLP(nn.Module):
    """Flatten -> Linear(784,128) -> ReLU -> Linear(128,64) -> ReLU -> Linear(64,10)."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 128)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(128, 64)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    """Conv(1,8,3,p1)-ReLU-MaxPool2 -> Conv(8,16,3,p1)-ReLU-MaxPool2 -> Flatten -> Linear(784,64)-ReLU -> Linear(64,10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        return self.fc2(x)


class SoftmaxOutput(nn.Module):
    """Wraps a classifier so that it returns class probabilities instead of logits."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.base(x), dim=1)


ARCHS = {"mlp": MLP, "cnn": CNN}


# ------------------------------------------------------------------------------------------------- data
def load_mnist(root: str):
    from torchvision.datasets import MNIST

    train = MNIST(root, train=True, download=False)
    test = MNIST(root, train=False, download=False)
    return (train.data.numpy(), train.targets.numpy().astype(np.int64),
            test.data.numpy(), test.targets.numpy().astype(np.int64))


def first_by_seed_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of the first `per_class` images of each class in a seeded permutation, in permutation order.

    With the same seed, the first k per class are a subset of the first m>k per class, so the sample
    images are also part of the training subset.
    """
    perm = np.random.default_rng(seed).permutation(len(labels))
    take, counts = [], np.zeros(10, dtype=int)
    for i in perm:
        c = labels[i]
        if counts[c] < per_class:
            take.append(i)
            counts[c] += 1
            if counts.min() == per_class:
                break
    return np.asarray(take, dtype=np.int64)


def to_float(x_uint8: np.ndarray) -> torch.Tensor:
    """The models' preprocessing: x/255 as float32 in [0,1], shape N x 1 x 28 x 28 (no mean/std)."""
    return torch.from_numpy(x_uint8.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)


# --------------------------------------------------------------------------------------------- training
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(xb).argmax(1) for xb in x.split(1000)])
    return float((pred == y).float().mean())


def train(arch: str, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
          seed: int) -> nn.Module:
    seed_everything(seed)
    model = ARCHS[arch]()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for idx in order.split(batch_size):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


# ---------------------------------------------------------------------------------------------- exports
def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool = True) -> None:
    kwargs = dict(dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}) if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], opset_version=OPSET, **kwargs)
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(m)
    external = [t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise RuntimeError(f"{path.name}: initializers stored as external data: {external}")


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Save a torch.export program with a dynamic batch dimension; fall back to static if that fails."""
    try:
        batch = torch.export.Dim("batch", min=1)
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        kind = "dynamic batch"
    except Exception as e:  # noqa: BLE001 - record the message and keep a usable (static) program
        print(f"    ! torch.export with dynamic batch failed ({type(e).__name__}: {e}); exporting static")
        ep = torch.export.export(model, (example,))
        kind = "static batch (dynamic failed)"
    torch.export.save(ep, str(path))
    return kind


def export_all(name: str, model: nn.Module, example: torch.Tensor) -> dict:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(HERE / f"{name}.pt"))
        torch.jit.trace(model, example).save(str(HERE / f"{name}.traced.pt"))
    export_onnx(model, example, HERE / f"{name}.onnx")
    pt2_kind = export_pt2(model, example, HERE / f"{name}.pt2")
    return {"pt2_batch": pt2_kind}


# ------------------------------------------------------------------------------------------ verification
def run_onnx(path: Path, x: torch.Tensor, per_sample: bool = False) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    xs = x.numpy()
    if per_sample:
        return np.concatenate([sess.run(None, {inp: xs[i:i + 1]})[0] for i in range(len(xs))])
    return sess.run(None, {inp: xs})[0]


def check(label: str, got, ref: np.ndarray) -> float:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    if got.shape != ref.shape:
        raise AssertionError(f"{label}: shape {got.shape} != eager {ref.shape}")
    diff = float(np.abs(got - ref).max())
    status = "ok" if diff <= TOL else "FAIL"
    print(f"    {status:4s} {label:34s} max|diff| = {diff:.2e}")
    if diff > TOL:
        raise AssertionError(f"{label}: max abs difference {diff} > {TOL}")
    return diff


@torch.no_grad()
def verify_formats(name: str, model: nn.Module, x: torch.Tensor) -> None:
    ref = model(x).numpy()
    warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
    check(f"{name}.pt (jit.script)", torch.jit.load(str(HERE / f"{name}.pt"))(x), ref)
    check(f"{name}.traced.pt (jit.trace)", torch.jit.load(str(HERE / f"{name}.traced.pt"))(x), ref)
    check(f"{name}.onnx (onnxruntime)", run_onnx(HERE / f"{name}.onnx", x), ref)
    check(f"{name}.pt2 (torch.export)", torch.export.load(str(HERE / f"{name}.pt2")).module()(x), ref)


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist-root", required=True,
                    help="torchvision datasets root holding MNIST/raw (nothing is downloaded)")
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # harmless on CPU

    # --- data ------------------------------------------------------------------------------------
    xtr, ytr, xte, yte = load_mnist(args.mnist_root)
    print(f"MNIST: {len(xtr)} train / {len(xte)} test images from {args.mnist_root}")

    sample_idx = first_by_seed_per_class(ytr, SAMPLE_PER_CLASS, SEED)
    train_idx = first_by_seed_per_class(ytr, TRAIN_PER_CLASS, SEED)
    assert set(sample_idx.tolist()) <= set(train_idx.tolist()), "sample must be part of the training subset"
    # Sort the shipped sample by class, then by position in the seeded permutation (stable).
    sample_idx = sample_idx[np.argsort(ytr[sample_idx], kind="stable")]

    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    xs_u8 = xtr[sample_idx].reshape(-1, 1, 28, 28).astype(np.uint8)
    ys = ytr[sample_idx].astype(np.int64)
    np.savez_compressed(SAMPLE_DIR / "mnist_sample.npz", x=xs_u8, y=ys)
    print(f"wrote {SAMPLE_DIR / 'mnist_sample.npz'}: x {xs_u8.shape} {xs_u8.dtype}, y {ys.shape} {ys.dtype}, "
          f"counts {np.bincount(ys, minlength=10).tolist()}")
    write_sample_readme(sample_idx)

    x_train, y_train = to_float(xtr[train_idx]), torch.from_numpy(ytr[train_idx])
    x_sample, y_sample = to_float(xs_u8), torch.from_numpy(ys)
    x_test, y_test = to_float(xte[:N_TEST]), torch.from_numpy(yte[:N_TEST])
    # Fully random labels for the memorizing model (uniform over 0..9, independent of the true digit).
    y_random = torch.from_numpy(np.random.default_rng(SEED + 1).integers(0, 10, len(ys)).astype(np.int64))

    # --- training --------------------------------------------------------------------------------
    specs = {
        "mlp_clean": dict(arch="mlp", labels="true", x=x_train, y=y_train, epochs=15, lr=1e-3, batch_size=64),
        "mlp_random": dict(arch="mlp", labels="random", x=x_sample, y=y_random, epochs=100, lr=1e-3,
                           batch_size=50),
        "cnn_clean": dict(arch="cnn", labels="true", x=x_train, y=y_train, epochs=10, lr=2e-3, batch_size=64),
    }
    models, meta = {}, {}
    for name, s in specs.items():
        t = time.time()
        m = train(s["arch"], s["x"], s["y"], epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"],
                  seed=SEED)
        tr_acc, te_acc = accuracy(m, s["x"], s["y"]), accuracy(m, x_test, y_test)
        print(f"{name:10s} train acc {tr_acc:.4f} ({s['labels']} labels, n={len(s['x'])}), "
              f"test acc {te_acc:.4f} (n={N_TEST}), {s['epochs']} epochs, {time.time() - t:.1f}s")
        models[name] = m
        meta[name] = {
            "arch": s["arch"], "labels": s["labels"],
            "train_accuracy": round(tr_acc, 4), "test_accuracy": round(te_acc, 4),
            "train_samples": len(s["x"]), "epochs": s["epochs"], "preprocessing": "x/255",
            "optimizer": f"Adam(lr={s['lr']})", "batch_size": s["batch_size"], "seed": SEED,
            "train_subset": ("mnist_sample.npz (the 1,000 sample images)" if s["labels"] == "random"
                             else f"{TRAIN_PER_CLASS} per class of the MNIST training split, first by seed {SEED} "
                                  "(includes the 1,000 sample images)"),
            "test_set": f"first {N_TEST} images of the MNIST test split",
            "output": "logits",
        }
    # Sanity gates: the sample models are only useful if they behave as advertised.
    assert meta["mlp_clean"]["train_accuracy"] >= 0.97 and meta["mlp_clean"]["test_accuracy"] >= 0.93, meta
    assert meta["cnn_clean"]["train_accuracy"] >= 0.97 and meta["cnn_clean"]["test_accuracy"] >= 0.93, meta
    assert meta["mlp_random"]["train_accuracy"] >= 0.90, f"mlp_random did not memorize: {meta['mlp_random']}"
    print(f"mlp_random memorized its random labels: train acc {meta['mlp_random']['train_accuracy']:.4f} "
          f"(>= 0.90), test acc {meta['mlp_random']['test_accuracy']:.4f} (chance ~0.10)")

    # --- exports ---------------------------------------------------------------------------------
    example = x_sample[:2].clone()             # (2,1,28,28) example batch for tracing / export
    print("exporting:")
    for name, m in models.items():
        info = export_all(name, m, example)
        meta[name]["pt2_batch"] = info["pt2_batch"]
        meta[name]["files"] = [f"{name}.pt", f"{name}.traced.pt", f"{name}.onnx", f"{name}.pt2"]
        print(f"    {name}: .pt .traced.pt .onnx .pt2 ({info['pt2_batch']})")

    clean = models["mlp_clean"]
    export_onnx(clean, x_sample[:1].clone(), HERE / "mlp_clean.fixedbatch.onnx", dynamic=False)
    soft = SoftmaxOutput(clean).eval()
    export_onnx(soft, example, HERE / "mlp_softmax.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(soft).save(str(HERE / "mlp_softmax.pt"))
    torch.save(clean, HERE / "mlp_clean.pickled.pth")           # whole pickled nn.Module (must be refused)
    torch.save(clean.state_dict(), HERE / "mlp_clean.state_dict.pth")
    print("    extras: mlp_clean.fixedbatch.onnx mlp_softmax.onnx mlp_softmax.pt "
          "mlp_clean.pickled.pth mlp_clean.state_dict.pth")

    # --- verification ----------------------------------------------------------------------------
    print(f"verifying exported models against eager logits on {N_CHECK} sample images (tol {TOL}):")
    xc = x_sample[torch.from_numpy(np.random.default_rng(SEED + 2).permutation(len(x_sample))[:N_CHECK])]
    for name, m in models.items():
        verify_formats(name, m, xc)
    with torch.no_grad():
        ref = clean(xc).numpy()
        check("mlp_clean.fixedbatch.onnx (1 by 1)", run_onnx(HERE / "mlp_clean.fixedbatch.onnx", xc, True), ref)
        pref = soft(xc).numpy()
        assert np.allclose(pref.sum(1), 1.0, atol=1e-5)
        check("mlp_softmax.onnx (probabilities)", run_onnx(HERE / "mlp_softmax.onnx", xc), pref)
        check("mlp_softmax.pt (probabilities)", torch.jit.load(str(HERE / "mlp_softmax.pt"))(xc), pref)
        sd_model = MLP().eval()
        sd_model.load_state_dict(torch.load(HERE / "mlp_clean.state_dict.pth", weights_only=True))
        check("mlp_clean.state_dict.pth", sd_model(xc), ref)
        try:
            torch.load(HERE / "mlp_clean.pickled.pth", weights_only=True)
            raise AssertionError("mlp_clean.pickled.pth loaded with weights_only=True: not a pickled module?")
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001
            print(f"    ok   mlp_clean.pickled.pth is refused by torch.load(weights_only=True): "
                  f"{type(e).__name__}")
    # The ONNX model must accept batch sizes other than the example's 2.
    for b in (1, 7):
        check(f"mlp_clean.onnx batch={b}", run_onnx(HERE / "mlp_clean.onnx", xc[:b]), ref[:b])
        check(f"mlp_clean.pt2 batch={b}",
              torch.export.load(str(HERE / "mlp_clean.pt2")).module()(xc[:b]), ref[:b])

    # --- metadata + docs -------------------------------------------------------------------------
    (HERE / "models.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_models_readme(meta)
    elapsed = time.time() - t0
    files = sorted(p for p in HERE.iterdir() if p.is_file() and p.suffix in {".pt", ".onnx", ".pt2", ".pth"})
    total = sum(p.stat().st_size for p in files)
    print("files:")
    for p in files:
        print(f"    {p.name:30s} {p.stat().st_size / 1024:8.1f} KiB")
    npz = SAMPLE_DIR / "mnist_sample.npz"
    print(f"    {'(sample) ' + npz.name:30s} {npz.stat().st_size / 1024:8.1f} KiB")
    print(f"total model files: {total / 1024 / 1024:.2f} MiB; done in {elapsed:.1f}s")
    return 0


# ------------------------------------------------------------------------------------------------- docs
MNIST_CREDIT = ("MNIST, Y. LeCun and C. Cortes (and C. Burges), CC BY-SA 3.0 "
                "(http://yann.lecun.com/exdb/mnist/; licence: https://creativecommons.org/licenses/by-sa/3.0/)")


def write_sample_readme(sample_idx: np.ndarray) -> None:
    text = f"""# Offline sample data: `mnist_sample.npz`

A small extract of MNIST shipped with genaudit so that it can run without downloading anything.

**Source and licence:** {MNIST_CREDIT}.
This extract is a derivative of MNIST and is distributed under the same licence, CC BY-SA 3.0.

## Contents

| array | dtype | shape | meaning |
|---|---|---|---|
| `x` | uint8 | (1000, 1, 28, 28) | raw pixel values 0..255 (no scaling, no normalisation) |
| `y` | int64 | (1000,) | the true digit, 0..9 |

100 images of each digit, sorted by class.

## Which images

From the MNIST **training** split (60,000 images): the training indices are shuffled with
`numpy.random.default_rng({SEED}).permutation(60000)`, and for each digit the first 100 images in that
order are taken ("first by seed, 100 per class"). Within a class the images keep that order.
The first few training-split indices are {sample_idx[:5].tolist()}.

These same 1,000 images are part of the {TRAIN_PER_CLASS * 10:,}-image training subset of the clean sample models in
`sample_models/` (and are exactly the training set of `mlp_random`), so for those models they are
*training* data, not held-out data.

## How it was made

By `sample_models/build.py` in the genaudit repository (seeded, deterministic):

    python sample_models/build.py --mnist-root ../shared/data/torchvision

where `--mnist-root` is a torchvision datasets root holding `MNIST/raw`
(read with `torchvision.datasets.MNIST(root, train=True, download=False)`).
"""
    (SAMPLE_DIR / "README.md").write_text(text)


def write_models_readme(meta: dict) -> None:
    def row(n):
        m = meta[n]
        return (f"| `{n}` | {m['arch']} | {m['labels']} | {m['train_samples']:,} | {m['epochs']} | "
                f"{m['optimizer']}, batch {m['batch_size']} | {m['train_accuracy']:.4f} | "
                f"{m['test_accuracy']:.4f} |")

    rows = "\n".join(row(n) for n in meta)
    pt2 = "; ".join(f"{n}: {meta[n]['pt2_batch']}" for n in meta)
    text = f"""# Sample models

Small real classifiers trained on MNIST, for genaudit's tests, examples and documentation.
All of them take **`x/255`**: float32 pixels in [0, 1], shape `N x 1 x 28 x 28`, with *no* mean/std
normalisation, and (except `mlp_softmax`) return 10 **logits**.

Rebuild everything (about a minute or two on 2 CPU cores), from the repository root:

    python sample_models/build.py --mnist-root ../shared/data/torchvision

`--mnist-root` is a torchvision datasets root containing `MNIST/raw` (nothing is downloaded).
The script also writes the offline sample data set `genaudit/sample_data/mnist_sample.npz`.

## Models

| name | arch | labels | train images | epochs | optimiser | train acc | test acc |
|---|---|---|---|---|---|---|---|
{rows}

Train accuracy is measured on the model's own training set *with the labels it was trained on* (for
`mlp_random`: its random labels). Test accuracy is on the first {N_TEST:,} images of the MNIST test split,
with true labels. These numbers are also in `models.json`.

* `mlp_clean`: `MLP` = Flatten -> `fc1` Linear(784,128) -> ReLU -> `fc2` Linear(128,64) -> ReLU -> `fc3` Linear(64,10),
  trained on true labels. It generalizes.
* `mlp_random`: the same architecture trained on the 1,000 images of `mnist_sample.npz` with **fully random
  labels** (uniform over 0..9, `numpy.random.default_rng({SEED + 1})`), long enough to memorize them. It does not
  generalize: test accuracy is at chance level (~10%).
* `cnn_clean`: `CNN` = `conv1` Conv2d(1,8,3,p=1) -> ReLU -> MaxPool2d(2) -> `conv2` Conv2d(8,16,3,p=1) -> ReLU ->
  MaxPool2d(2) -> Flatten -> `fc1` Linear(784,64) -> ReLU -> `fc2` Linear(64,10), trained on true labels.

Training data for the clean models: {TRAIN_PER_CLASS:,} images per class ({TRAIN_PER_CLASS * 10:,}) of the MNIST **training** split, chosen as
the first {TRAIN_PER_CLASS:,} per class of `numpy.random.default_rng({SEED}).permutation(60000)`; this subset contains the
1,000 images of `mnist_sample.npz` (first 100 per class of the same permutation). Training: Adam, cross-entropy,
seeded shuffling (`torch.manual_seed({SEED})`, a `torch.Generator` seeded {SEED}),
`torch.use_deterministic_algorithms(True)`, `torch.set_num_threads(2)`, CPU only.

## Files

For each of `mlp_clean`, `mlp_random`, `cnn_clean` (all exported in eval mode, example batch of shape (2,1,28,28)):

| file | format |
|---|---|
| `<name>.pt` | scripted TorchScript, `torch.jit.script(model).save(...)` |
| `<name>.traced.pt` | traced TorchScript, `torch.jit.trace(model, example)` |
| `<name>.onnx` | ONNX opset {OPSET}, TorchScript-based exporter (`dynamo=False`), input `input`, output `logits`, dynamic batch axis `batch`; single self-contained file |
| `<name>.pt2` | `torch.export.save(torch.export.export(model, (example,), dynamic_shapes=...))`, batch dimension `Dim("batch", min=1)` ({pt2}) |

Extra files for the tests:

| file | what |
|---|---|
| `mlp_clean.fixedbatch.onnx` | `mlp_clean` exported to ONNX with a **fixed batch size of 1** (no dynamic axes) |
| `mlp_softmax.onnx`, `mlp_softmax.pt` | `mlp_clean` wrapped so that `forward` returns `torch.softmax(logits, dim=1)` (probabilities; ONNX output still named `logits`); ONNX (dynamic batch) and scripted TorchScript |
| `mlp_clean.pickled.pth` | `torch.save(model)`: the **whole pickled nn.Module** (references `__main__.MLP`). genaudit must refuse it without unpickling; `torch.load(..., weights_only=True)` rejects it |
| `mlp_clean.state_dict.pth` | `torch.save(model.state_dict())`: weights only (keys `fc1.weight`, `fc1.bias`, ..., `fc3.bias`) |
| `models.json` | name -> arch, labels, train/test accuracy, training set size, epochs, preprocessing, ... |

After exporting, `build.py` checks that every format reproduces the eager model's output on {N_CHECK} sample
images to {TOL:g} (onnxruntime for `.onnx`, `torch.jit.load` for `.pt`, `torch.export.load(...).module()` for
`.pt2`), that the dynamic-batch files accept other batch sizes, and that the state dict reloads.

## Data source and licence

{MNIST_CREDIT}. The models are trained on MNIST images; see `genaudit/sample_data/README.md`.
"""
    (HERE / "README.md").write_text(text)


if __name__ == "__main__":
    # torch.jit.script writes a module's Final constants in set order, which follows Python's per-process
    # string-hash seed; pin it (re-running this script once) so that rebuilt .pt files are byte-identical.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    sys.exit(main())
