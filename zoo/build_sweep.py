#!/usr/bin/env python
"""Build genaudit's clean-label hyper-parameter sweep zoo: seeded, CPU-only classifiers with their true held-out accuracy.

    python zoo/build_sweep.py --data-root /work/shared/data/torchvision --out zoo/sweep --jobs 2 [--tiny]
    python zoo/build_sweep.py --summarize zoo/sweep          # the tables of zoo/SWEEP.md

The complement of the label-noise zoo (zoo/build_zoo.py), in the manner of Jiang et al. 2020 ("Fantastic
generalization measures and where to find them") and the PGDL competition: all labels are clean, and the
models differ by their hyper-parameters -- width, depth, learning rate, batch size, weight decay, dropout,
training-set size, data augmentation and optimizer -- over three architecture families (mlp, cnn, resnet) and
two data sets (MNIST, Fashion-MNIST). The design is not a full product: per (data set, architecture) a base
configuration, one-at-a-time variations of every hyper-parameter (the groups of PGDL's granulated Kendall tau,
each of which also contains the base run) and a few seeded random combinations (for the overall ranking).

Every run is saved at several checkpoints (geometric in the number of training samples seen, so that small
training sets get as many optimizer steps as the reference size: underfit early checkpoints and converged late
ones) as ONNX, and ``{out}/manifest.json`` lists each checkpoint with all its hyper-parameters, its training
accuracy and its accuracy on 2,000 stratified images of the *test* split (never trained on). The training sets
(nested stratified subsets of the train split, one per size) are written as ``{out}/{dataset}_train_n{size}.npz``
and the holdout as ``{out}/{dataset}_holdout.npz`` (x uint8 N x 1 x 28 x 28, y int64, index).

Conventions as zoo/build_zoo.py (whose helpers it imports): inputs x/255 in [0, 1], no normalization, ONNX
opset 17 with input ``input`` (N x 1 x 28 x 28) and output ``logits``, dynamic batch; every model is an
``nn.Sequential`` whose last module is the classification ``nn.Linear`` (its input is the feature layer);
runs train in ``--jobs`` spawned workers with ``torch.set_num_threads(1)``, seeded, so rebuilds are
bit-identical for any ``--jobs``. See zoo/SWEEP.md for the grid, the measured time and the results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_zoo import DATASETS, export_onnx, load_split, stratified_subset

ARCHS = ("mlp", "cnn", "resnet")
NUM_CLASSES = 10
HPARAMS = ("width", "depth", "lr", "batch_size", "weight_decay", "dropout", "train_size", "augment", "optimizer")
MOMENTUM = 0.9  # SGD
ADAM_LR = 1e-3  # the learning rate of the "optimizer: adam" variation (the others use SGD's lr grid)
REF_SIZE = 2000  # training sets smaller than this train proportionally more epochs (same samples seen)
CHECKPOINTS = (1, 2, 4, 8, 16)  # epochs at the reference size
HOLDOUT_SIZE = 2000
TRAIN_SIZES = (500, 1000, 2000, 4000)
AUG_SHIFT = 2  # pixels, uniform integer shift in [-2, 2] on each axis
AUG_ROTATE = 10.0  # degrees, uniform in [-10, 10]

# Base configuration per architecture family. width: mlp = hidden units of every hidden layer; cnn = channels of
# the first conv (then x2, x4); resnet = channels of the first stage (then x2, x4). depth: mlp = hidden layers;
# cnn = conv layers; resnet = residual stages (one basic block each).
BASE = {
    "mlp": dict(width=256, depth=2, lr=0.02, batch_size=64, weight_decay=0.0, dropout=0.0, train_size=2000,
                augment=False, optimizer="sgd"),
    "cnn": dict(width=8, depth=2, lr=0.02, batch_size=64, weight_decay=0.0, dropout=0.0, train_size=2000,
                augment=False, optimizer="sgd"),
    "resnet": dict(width=8, depth=2, lr=0.02, batch_size=64, weight_decay=0.0, dropout=0.0, train_size=2000,
                   augment=False, optimizer="sgd"),
}
# One-at-a-time variations: group name -> values other than the base value.
VARIATIONS = {
    "mlp": dict(width=(64, 512), depth=(1, 3), lr=(0.005, 0.1), batch_size=(32, 256), weight_decay=(5e-3,),
                dropout=(0.5,), train_size=(500, 1000, 4000), augment=(True,), optimizer=("adam",)),
    "cnn": dict(width=(4, 16), depth=(3,), lr=(0.005, 0.1), batch_size=(32, 256), weight_decay=(5e-3,),
                dropout=(0.5,), train_size=(500, 1000, 4000), augment=(True,), optimizer=("adam",)),
    "resnet": dict(width=(4, 16), depth=(3,), lr=(0.005, 0.1), batch_size=(32, 256), weight_decay=(5e-3,),
                   dropout=(0.5,), train_size=(500, 1000, 4000), augment=(True,), optimizer=("adam",)),
}
N_RANDOM = 2  # random combinations per (data set, arch), each hyper-parameter drawn from base + variations

TINY = dict(train_sizes=(250, 500), ref_size=500, checkpoints=(1, 2, 4), holdout=300,
            groups=("base", "train_size"), n_random=0)


# ----------------------------------------------------------------------------------------------- data


def nested_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted train-split indices of n samples, n/10 per class (remainder to the first classes): the first ones of
    one seeded order of each class, so every size is contained in every larger one, and a size's subset does not
    depend on which other sizes a (restricted) build uses."""
    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(y == c)) for c in range(NUM_CLASSES)]
    per = [n // NUM_CLASSES + (1 if c < n % NUM_CLASSES else 0) for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate([o[:k] for o, k in zip(order, per)]))


def prepare_dataset(data_root: Path, dataset: str, sizes, n_hold: int, base_seed: int, out: Path, log) -> dict:
    dseed = base_seed * 7919 + list(DATASETS).index(dataset) + 1  # as build_zoo: the same holdout images
    xtr, ytr = load_split(data_root, dataset, train=True)
    xte, yte = load_split(data_root, dataset, train=False)
    ite = stratified_subset(yte, n_hold, dseed + 100)
    np.savez(out / f"{dataset}_holdout.npz", x=xte[ite], y=yte[ite], index=ite)
    train = {}
    for n in sorted(set(sizes)):
        idx = nested_subset(ytr, n, dseed + 300)
        np.savez(out / f"{dataset}_train_n{n}.npz", x=xtr[idx], y=ytr[idx], index=idx)
        train[n] = (xtr[idx], ytr[idx])
    log(f"{dataset}: training sets {sorted(train)} (train split, nested, stratified), {n_hold} holdout images "
        "(test split)")
    return dict(train=train, x_hold=xte[ite], y_hold=yte[ite])


# --------------------------------------------------------------------------------------------- models


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus the (projected when the shape changes) input, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def build_model(arch: str, width: int, depth: int, dropout: float) -> nn.Sequential:
    """A plain nn.Sequential whose last module is the classification Linear; its input is the feature layer."""
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    if arch == "mlp":  # 784 - width x depth - 10
        layers: list[nn.Module] = [nn.Flatten()]
        cin = 784
        for _ in range(depth):
            layers += [nn.Linear(cin, width), nn.ReLU()] + [nn.Dropout(dropout)] * bool(dropout)
            cin = width
        layers += [nn.Linear(cin, NUM_CLASSES)]
    elif arch == "cnn":  # conv3x3/2 (w) [- conv3x3/1 (2w)] - conv3x3/2 (2w or 4w) - fc 128 - fc 10
        chans = [width, 2 * width] if depth == 2 else [width, 2 * width, 4 * width][:depth]
        strides = [2, 2] if depth == 2 else [2, 1, 2] + [1] * (depth - 3)
        layers, cin = [], 1
        for c, s in zip(chans, strides):
            layers += [nn.Conv2d(cin, c, 3, stride=s, padding=1), nn.ReLU()]
            cin = c
        layers += [nn.Flatten()] + ([nn.Dropout(dropout / 2)] if dropout > 0 else [])
        layers += [nn.Linear(cin * 7 * 7, 128), nn.ReLU()] + drop + [nn.Linear(128, NUM_CLASSES)]
    elif arch == "resnet":  # stem conv3x3/2 (w, 14x14) - stages of one basic block, each stride 2 (w 7x7, 2w 4x4,
        #                     4w 2x2) - global average pool - fc 10 (strided: a ResNet at 14x14 costs 3x more on CPU)
        layers = [nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for i in range(depth):
            cout = width * 2 ** i
            layers.append(BasicBlock(cin, cout, 2))
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] + drop + [nn.Linear(cin, NUM_CLASSES)]
    else:
        raise ValueError(arch)
    return nn.Sequential(*layers)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random integer shifts of up to AUG_SHIFT pixels and rotations of up to AUG_ROTATE degrees (bilinear, zero
    fill), one affine transform per image, drawn from `gen`."""
    n = len(x)
    shift = torch.randint(-AUG_SHIFT, AUG_SHIFT + 1, (n, 2), generator=gen).float()
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(AUG_ROTATE)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, -shift[:, 0] * 2 / 28], 1),
                         torch.stack([sin, cos, -shift[:, 1] * 2 / 28], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
        loss += float(F.cross_entropy(logits, y[i:i + batch], reduction="sum"))
    return correct / len(x), loss / len(x)


# ------------------------------------------------------------------------------------------------ design


def run_name(dataset: str, arch: str, group: str, hp: dict) -> str:
    if group == "base":
        return f"{dataset}_{arch}_base"
    if group.startswith("random"):
        return f"{dataset}_{arch}_{group}"
    v = hp[group]
    short = dict(width="w", depth="d", lr="lr", batch_size="bs", weight_decay="wd", dropout="do", train_size="n",
                 augment="aug", optimizer="opt")[group]
    v = {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
    return f"{dataset}_{arch}_{short}{v:g}" if isinstance(v, float) else f"{dataset}_{arch}_{short}{v}"


def design(datasets, archs, groups, n_random: int, seed: int, train_sizes=None) -> list[dict]:
    """The runs: per (data set, arch) the base config, its one-at-a-time variations, then random combinations.

    Each run: dataset, arch, run, group (the variation it was made for: 'base', a hyper-parameter name or
    'random<k>'), groups (every one-at-a-time group it belongs to: the base run belongs to all), hp.
    """
    runs = []
    for d in datasets:
        for a in archs:
            base = dict(BASE[a])
            var = {k: v for k, v in VARIATIONS[a].items()}
            if train_sizes is not None:  # --tiny: other training sizes, the largest one as base
                base["train_size"] = max(train_sizes)
                var["train_size"] = tuple(s for s in train_sizes if s != base["train_size"])
            own = []
            if groups is None or "base" in groups:
                own.append(dict(group="base", hp=dict(base)))
            for g, values in var.items():
                if groups is not None and g not in groups:
                    continue
                for v in values:
                    own.append(dict(group=g, hp={**base, g: v}))
            rng = np.random.default_rng(seed * 1_000_003 + zlib.crc32(f"{d}/{a}/random".encode()))
            seen = [tuple(r["hp"].items()) for r in own]
            k = 0
            while k < n_random and (groups is None or "random" in groups):
                hp = {h: (base[h] if h not in var else [base[h], *var[h]][rng.integers(len(var[h]) + 1)])
                      for h in HPARAMS}
                if sum(hp[h] != base[h] for h in HPARAMS) < 2 or tuple(hp.items()) in seen:
                    continue  # a random combination differs from the base in at least two hyper-parameters
                seen.append(tuple(hp.items()))
                own.append(dict(group=f"random{k + 1}", hp=hp))
                k += 1
            varied = [g for g in HPARAMS if any(r["group"] == g for r in own)]
            for r in own:
                if r["hp"]["optimizer"] == "adam":  # lr is drawn on SGD's scale; Adam's is ADAM_LR / base lr smaller
                    r["hp"]["lr"] = float(f"{r['hp']['lr'] * ADAM_LR / BASE[a]['lr']:.3g}")
                gs = ["base"] + varied if r["group"] == "base" else [r["group"]]
                runs.append(dict(dataset=d, arch=a, run=run_name(d, a, r["group"], r["hp"]), group=r["group"],
                                 groups=gs, hp=r["hp"]))
    return runs


def run_seed(base_seed: int, run: str) -> int:
    """A stable per-run seed (crc32 of the run's name, not Python's salted hash)."""
    return (base_seed * 1_000_003 + zlib.crc32(run.encode())) % (2**31)


def checkpoint_epochs(train_size: int, ref_size: int, checkpoints) -> list[int]:
    """Checkpoints at the same numbers of samples seen as at the reference size (more epochs for smaller sets)."""
    f = max(1, ref_size // train_size)
    return [f * c for c in checkpoints]


def cost(job: dict) -> float:
    """A rough relative cost (for scheduling the longest runs first; does not change any result)."""
    hp = job["hp"]
    samples = hp["train_size"] * job["checkpoints"][-1]
    per = {"mlp": 0.2 + 0.4 * hp["width"] * hp["depth"] / 512, "cnn": 1.0 * hp["width"] / 8 * (1 + hp["depth"] - 2),
           "resnet": 1.0 * (hp["width"] / 8) ** 1.5 * (1 + 0.5 * (hp["depth"] - 2))}[job["arch"]]
    return samples * per * (1 + 0.5 * hp["augment"]) * (1 + 32 / hp["batch_size"])


# ------------------------------------------------------------------------------------------------ train


def train_run(job: dict, data: dict, log) -> list[dict]:
    hp, seed, out = job["hp"], job["seed"], Path(job["out"])
    x_train, y_train = data["train"][hp["train_size"]]
    x_hold, y_hold = data["x_hold"], data["y_hold"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    model = build_model(job["arch"], hp["width"], hp["depth"], hp["dropout"])
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=MOMENTUM, weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n, bs = len(x_train), hp["batch_size"]
    ckpts = job["checkpoints"]
    entries, steps = [], 0
    for epoch in range(1, ckpts[-1] + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2 and has_bn:
                continue
            xb = x_train[idx]
            if hp["augment"]:
                xb = augment(xb, aug_gen)
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        diverged = not math.isfinite(float(loss.detach()))
        if diverged:
            log(f"  e{epoch}: loss is {float(loss.detach())}; stopping this run")
        if epoch in ckpts or diverged:
            tr_acc, tr_loss = evaluate(model, x_train, y_train)
            ho_acc, ho_loss = evaluate(model, x_hold, y_hold)
            name = f"{job['run']}_e{epoch:03d}.onnx"
            export_onnx(model, out / name)
            entries.append(dict(
                file=name, dataset=job["dataset"], arch=job["arch"], run=job["run"], group=job["group"],
                groups=job["groups"], **hp, momentum=MOMENTUM if hp["optimizer"] == "sgd" else None,
                epoch=epoch, checkpoint=ckpts.index(epoch) + 1 if epoch in ckpts else None, steps=steps,
                final=epoch == ckpts[-1],
                train_npz=f"{job['dataset']}_train_n{hp['train_size']}.npz",
                holdout_npz=f"{job['dataset']}_holdout.npz",
                train_accuracy=tr_acc, train_loss=tr_loss, holdout_accuracy=ho_acc, holdout_loss=ho_loss,
                train_samples=int(n), holdout_samples=int(len(x_hold)), seed=int(seed)))
            log(f"  e{epoch:3d} ({steps:5d} steps)  train {tr_acc:.3f} (loss {tr_loss:.3f})  holdout {ho_acc:.3f}")
            if diverged:
                break
    return entries


_DATA: dict = {}


def _init_worker(data: dict, threads: int) -> None:
    """Per process: fixed thread count, deterministic kernels, the data sets as float tensors in [0, 1]."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    _DATA.clear()
    for d, dd in data.items():
        _DATA[d] = dict(
            train={n: (torch.from_numpy(x).float().div_(255.0), torch.from_numpy(y)) for n, (x, y) in dd["train"].items()},
            x_hold=torch.from_numpy(dd["x_hold"]).float().div_(255.0), y_hold=torch.from_numpy(dd["y_hold"]))


def _run_job(job: dict) -> tuple[int, list[dict], list[str], float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    lines: list[str] = []
    entries = train_run(job, _DATA[job["dataset"]], lines.append)
    return job["index"], entries, lines, time.perf_counter() - t, time.process_time() - cpu


# ------------------------------------------------------------------------------------------------ summary


def _rng(v) -> str:
    return f"{min(v):.3f}–{max(v):.3f}" if v else "–"


def summarize(entries: list[dict]) -> str:
    """Markdown tables: accuracy ranges per (data set, arch), and per one-at-a-time group."""
    out = ["Holdout accuracy per (data set, arch): range over all checkpoints, over the final checkpoints, and "
           "the final training accuracy:", "",
           "| data set / arch | runs | models | holdout, all checkpoints | holdout, median | holdout, final "
           "checkpoints | train, final checkpoints |", "|---|---|---|---|---|---|---|"]
    for d in DATASETS:
        for a in ARCHS:
            sel = [e for e in entries if e["dataset"] == d and e["arch"] == a]
            if not sel:
                continue
            fin = [e for e in sel if e["final"]]
            h = [e["holdout_accuracy"] for e in sel]
            out.append(f"| {d} / {a} | {len({e['run'] for e in sel})} | {len(sel)} | {_rng(h)} | "
                       f"{np.median(h):.3f} | {_rng([e['holdout_accuracy'] for e in fin])} | "
                       f"{_rng([e['train_accuracy'] for e in fin])} |")
    cks = sorted({e["checkpoint"] for e in entries if e["checkpoint"]})
    out += ["", "Mean holdout / training accuracy by checkpoint (k-th checkpoint of every run: epochs "
            f"{', '.join(str(e['epoch']) for e in entries if e['run'] == entries[0]['run'])} at training size "
            ">= the reference size, proportionally more epochs for smaller sets):", "",
            "| data set / arch | " + " | ".join(f"ckpt {k}" for k in cks) + " |", "|---|" + "---|" * len(cks)]
    for d in DATASETS:
        for a in ARCHS:
            cells = []
            for ck in cks:
                sel = [e for e in entries if e["dataset"] == d and e["arch"] == a and e["checkpoint"] == ck]
                cells.append(f"{np.mean([e['holdout_accuracy'] for e in sel]):.3f} / "
                             f"{np.mean([e['train_accuracy'] for e in sel]):.3f}" if sel else "–")
            if any(c != "–" for c in cells):
                out.append(f"| {d} / {a} | " + " | ".join(cells) + " |")
    groups = [g for g in HPARAMS if any(g in e["groups"] for e in entries)]
    out += ["", "Final-checkpoint holdout accuracy within each one-at-a-time group (the base run and its variations "
            "of one hyper-parameter): `value: accuracy`, base value in bold:", "",
            "| data set / arch | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for d in DATASETS:
        for a in ARCHS:
            fin = [e for e in entries if e["dataset"] == d and e["arch"] == a and e["final"]]
            if not fin:
                continue
            cells = []
            for g in groups:
                sel = sorted((e for e in fin if g in e["groups"]), key=lambda e: (str(type(e[g])), e[g]))
                cells.append(", ".join((f"**{_fmt(e[g])}**" if e["group"] == "base" else _fmt(e[g]))
                                       + f": {e['holdout_accuracy']:.3f}" for e in sel) or "–")
            out.append(f"| {d} / {a} | " + " | ".join(cells) + " |")
    rnd = [e for e in entries if e["group"].startswith("random") and e["final"]]
    if rnd:
        out += ["", "Random combinations (final checkpoint):", "",
                "| run | " + " | ".join(HPARAMS) + " | train | holdout |", "|---|" + "---|" * (len(HPARAMS) + 2)]
        for e in rnd:
            out.append(f"| {e['run']} | " + " | ".join(_fmt(e[h]) for h in HPARAMS)
                       + f" | {e['train_accuracy']:.3f} | {e['holdout_accuracy']:.3f} |")
    return "\n".join(out)


def _fmt(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else (f"{v:g}" if isinstance(v, float) else str(v))


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="torchvision root holding MNIST/ and FashionMNIST/")
    p.add_argument("--out", type=Path, help="output folder for ONNX files, manifest.json and .npz subsets")
    p.add_argument("--summarize", type=Path, metavar="DIR", help="only print the summary tables (markdown) of the "
                   "zoo in DIR (its manifest.json) and exit")
    p.add_argument("--list", action="store_true", help="only print the runs of the grid and exit")
    p.add_argument("--tiny", action="store_true", help="a ~30-second smoke build: MNIST, each arch at its base "
                   "config and a smaller training set (500 / 250 images), 300 holdout images, checkpoints 1, 2, 4")
    p.add_argument("--datasets", type=str, default=None, help="restrict the grid, e.g. mnist")
    p.add_argument("--archs", type=str, default=None, help="restrict the grid, e.g. mlp,resnet")
    p.add_argument("--groups", type=str, default=None, help="restrict to these groups: base, random and the "
                   "hyper-parameter names " + ", ".join(HPARAMS))
    p.add_argument("--random", type=int, default=None, help=f"random combinations per (data set, arch) (default "
                   f"{N_RANDOM})")
    p.add_argument("--checkpoints", type=str, default=None, help="comma-separated epochs at the reference size "
                   f"{REF_SIZE} (default {','.join(map(str, CHECKPOINTS))}); smaller training sets scale them up")
    p.add_argument("--holdout-size", type=int, default=None, help=f"holdout images (default {HOLDOUT_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="base seed (subsets, random combinations, runs)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes, each training whole runs (default 2); "
                   "results do not depend on it")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(json.loads((args.summarize / "manifest.json").read_text())))
        return 0

    def listed(s):
        return None if s is None else tuple(v.strip() for v in s.split(",") if v.strip())

    datasets = listed(args.datasets) or (("mnist",) if args.tiny else tuple(DATASETS))
    archs = listed(args.archs) or ARCHS
    groups = listed(args.groups) or (TINY["groups"] if args.tiny else None)
    for v in datasets:
        if v not in DATASETS:
            p.error(f"unknown data set {v!r}")
    for v in archs:
        if v not in ARCHS:
            p.error(f"unknown arch {v!r}")
    for v in groups or ():
        if v not in HPARAMS + ("base", "random"):
            p.error(f"unknown group {v!r}")
    n_random = args.random if args.random is not None else (TINY["n_random"] if args.tiny else N_RANDOM)
    ref_size = TINY["ref_size"] if args.tiny else REF_SIZE
    ckpts = tuple(int(v) for v in args.checkpoints.split(",")) if args.checkpoints else (
        TINY["checkpoints"] if args.tiny else CHECKPOINTS)
    n_hold = args.holdout_size or (TINY["holdout"] if args.tiny else HOLDOUT_SIZE)
    runs = design(datasets, archs, groups, n_random, args.seed, TINY["train_sizes"] if args.tiny else None)
    if not runs:
        p.error("the grid restrictions leave no run")
    jobs = [dict(r, index=k, seed=run_seed(args.seed, r["run"]), out=str(args.out),
                 checkpoints=checkpoint_epochs(r["hp"]["train_size"], ref_size, ckpts)) for k, r in enumerate(runs)]
    if args.list:
        for j in jobs:
            print(f"{j['run']:32s} groups={','.join(j['groups'])}  " + " ".join(f"{h}={_fmt(j['hp'][h])}" for h in HPARAMS)
                  + f"  epochs={j['checkpoints']}")
        print(f"{len(jobs)} runs, {sum(len(j['checkpoints']) for j in jobs)} checkpoints")
        return 0
    if args.data_root is None or args.out is None:
        p.error("--data-root and --out are required (unless --summarize or --list)")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {}
    for d in datasets:
        sizes = sorted({j["hp"]["train_size"] for j in jobs if j["dataset"] == d})
        if sizes:
            data[d] = prepare_dataset(args.data_root, d, sizes, n_hold, args.seed, out, log)

    by_index: dict[int, list[dict]] = {}
    timings, cpu_times = [], []
    n_jobs = max(1, min(args.jobs, len(jobs)))
    order = sorted(jobs, key=lambda j: -cost(j))  # longest first: keeps both workers busy to the end
    import multiprocessing as mp

    # Runs always train in spawned workers (even with --jobs 1), holding only the data subsets: a run's numbers do
    # not depend on the parent process or on which worker runs it.
    pool = mp.get_context("spawn").Pool(n_jobs, initializer=_init_worker, initargs=(data, args.threads))
    try:
        for k, (index, run_entries, lines, seconds, cpu) in enumerate(pool.imap_unordered(_run_job, order), 1):
            job = jobs[index]
            log(f"[{k}/{len(jobs)}] {job['run']} ({seconds:.1f} s wall, {cpu:.1f} s CPU; "
                f"{time.perf_counter() - t0:.0f} s elapsed)")
            for line in lines:
                log(line)
            by_index[index] = run_entries
            timings.append(seconds)
            cpu_times.append(cpu)
            entries = [e for i in sorted(by_index) for e in by_index[i]]  # the grid's order, whatever finished first
            with open(out / "manifest.json", "w") as fh:  # rewritten after every run: a partial build is usable
                json.dump(entries, fh, indent=1)
    finally:
        pool.close()
        pool.join()

    entries = [e for i in sorted(by_index) for e in by_index[i]]
    wall = time.perf_counter() - t0
    build = dict(
        runs=len(jobs), models=len(entries), wall_seconds=round(wall, 1), checkpoints_at_ref_size=list(ckpts),
        ref_size=ref_size, holdout_size=n_hold, seed=args.seed, tiny=args.tiny, torch=torch.__version__,
        jobs=n_jobs, threads_per_job=args.threads, run_seconds=round(float(np.sum(timings)), 1),
        cpu_seconds=round(float(np.sum(cpu_times)), 1), base=BASE, variations=VARIATIONS, n_random=n_random,
        momentum=MOMENTUM, augmentation=dict(shift_pixels=AUG_SHIFT, rotate_degrees=AUG_ROTATE),
    )
    with open(out / "build.json", "w") as fh:
        json.dump(build, fh, indent=1)
    log(f"\n{len(jobs)} runs, {len(entries)} ONNX models -> {out / 'manifest.json'}\n")
    log(summarize(entries))
    log(f"\ntotal time: {wall:.0f} s wall ({wall / 60:.1f} min), {np.sum(cpu_times):.0f} CPU-s in the runs "
        f"(mean {np.mean(timings):.1f} s per run), --jobs {n_jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
