#!/usr/bin/env python
"""Build genaudit's real-use zoo: classifiers trained the way people train them, with their true held-out accuracy.

    python zoo/build_realuse.py --out zoo/realuse --jobs 2            # the default grid (see zoo/REALUSE.md)
    python zoo/build_realuse.py --out /tmp/realuse --tiny             # ~30-second smoke build
    python zoo/build_realuse.py --list                                # the runs, no training
    python zoo/build_realuse.py --summarize zoo/realuse               # the summary table of zoo/REALUSE.md

The label-noise zoo (zoo/build_zoo.py) and the hyper-parameter sweep (zoo/build_sweep.py) train small models on
500-4,000 images with constant learning rates. This zoo is the complement genaudit's estimator has to survive:

* **Full-data MNIST / Fashion-MNIST**: models trained on all 60,000 training images with standard recipes (an
  MLP 784-512-256-10 with Adam and a cosine or constant learning rate; a conv-BN-ReLU CNN with SGD + momentum +
  OneCycle and random +-2 px shifts, or with constant-lr Adam and no augmentation), clean labels and 20 / 40 %
  uniform label noise, one checkpoint after every epoch. Holdout = the full 10,000-image test split. The audited
  training file is a stratified seeded subset of 4,000 of the 60,000 training images (with the labels the model
  was trained on).
* **CIFAR-10 (partial)**: 4,000 of the 5,169 offline training images (stratified, seeded), small CNNs and a
  ResNet-8, with and without augmentation (random crop with 4 px zero padding + horizontal flip), label noise
  0 / 20 / 40 / 60 %, SGD + cosine schedule (Adam on un-normalized x/255 in block 'more'), checkpoints from
  underfit to memorized. Holdout = the 1,169 training images not trained on + the 1,017 test images.

Every checkpoint is an ONNX file (opset 17, input ``input`` N x C x H x W float = uint8 pixels / 255, output
``logits``, dynamic batch). Normalization by the data set's mean / std is baked into the model as its first
module (runs marked ``normalization: none`` feed x/255 directly), so genaudit's default ``unit`` preprocessing
(x/255) gives every model exactly what it was trained on. Every model is an ``nn.Sequential`` whose last module
is the classification ``nn.Linear``; its input is the feature layer genaudit picks by default.

``{out}/manifest.json`` lists every checkpoint (rewritten after every run; entries of runs that are not part of
the current invocation are kept, so a build can be extended or resumed with --skip-existing). Runs train in
``--jobs`` spawned worker processes (a fresh process per run, ``torch.set_num_threads(1)``), seeded by the crc32
of the run's name, with deterministic kernels. See zoo/REALUSE.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_sweep import BasicBlock  # noqa: E402
from build_zoo import corrupt_labels, load_split, stratified_subset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path("/work/shared/data/torchvision")
CIFAR_ROOT = Path("/work/shared/data/cifar10-partial")
NUM_CLASSES = 10
DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist-clutter")
AUDIT_SIZE = 4000        # audited training subset of the 60k runs (stratified, seeded); CIFAR: the whole training set
CIFAR_TRAIN = 4000       # CIFAR-10 training images (stratified, seeded) out of the 5,169 available
SHAPE = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "mnist-clutter": (1, 28, 28)}
CLUTTER = dict(angle=45.0, shift=4, train=4000)  # mnist-clutter: rotation +-45 deg, shift +-4 px, 4,000 trained on
# per-channel mean / std of x/255 (MNIST's and CIFAR-10's are the usual published values; Fashion-MNIST's are
# its training split's); baked into the model's first module when normalization == "meanstd"
MEANSTD = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist-clutter": ((0.5488,), (0.2965,)),  # its 4,000 training images'
}

# Optimizer + schedule recipes. lr is the peak (OneCycle) or initial (cosine) learning rate; schedules step per
# optimizer step over the run's whole length.
RECIPES = {
    "adamcos": dict(optimizer="adam", lr=1e-3, schedule="cosine", weight_decay=0.0, momentum=None, nesterov=False),
    "adamconst": dict(optimizer="adam", lr=1e-3, schedule="constant", weight_decay=0.0, momentum=None,
                      nesterov=False),
    "sgd1cyc": dict(optimizer="sgd", lr=0.1, schedule="onecycle", weight_decay=5e-4, momentum=0.9, nesterov=True),
    "sgdcos": dict(optimizer="sgd", lr=0.05, schedule="cosine", weight_decay=5e-4, momentum=0.9, nesterov=True),
}
BATCH_SIZE = 128
AUG_TOKENS = {"none": "noaug", "shift2": "shift", "crop4flip": "cropflip"}
ARCH_TEXT = {
    "mlp": "Normalize - Flatten - Linear 784-512 - ReLU - Linear 512-256 - ReLU - Linear 256-10",
    "cnn": "Normalize - [conv3x3 (w) - BN - ReLU - maxpool2] - [conv3x3 (2w) - BN - ReLU - maxpool2] - "
           "conv3x3 (4w) - BN - ReLU (- maxpool2 on 32x32) - Flatten - Linear 128 - ReLU - Linear 10",
    "resnet": "Normalize - conv3x3 (w) - BN - ReLU - basic block (w, stride 1) - basic block (2w, stride 2) - "
              "basic block (4w, stride 2) - global average pool - Linear 10 (ResNet-8)",
}


# ----------------------------------------------------------------------------------------------- grid


def _run(block, dataset, arch, recipe, augment, corruption, epochs, checkpoints=None, width=None,
         normalization="meanstd", smoothing=0.0, mixup=0.0):
    """One training run. checkpoints None = every epoch. `smoothing`: label smoothing of the cross-entropy;
    `mixup`: the Beta(a, a) parameter of mixup (0: none)."""
    width = width or {"mlp": 512, "cnn": 16, "resnet": 16}[arch]
    default_w = {"mlp": 512, "cnn": 16, "resnet": 16}[arch]
    name = f"{dataset}_{arch}" + (f"w{width}" if width != default_w else "") + f"_{recipe}_{AUG_TOKENS[augment]}" \
        + ("_unit" if normalization == "none" else "") + (f"_ls{round(smoothing * 100):02d}" if smoothing else "") \
        + (f"_mix{round(mixup * 100):02d}" if mixup else "") + f"_c{corruption:02d}"
    ck = list(range(1, epochs + 1)) if checkpoints is None else list(checkpoints)
    assert ck[-1] == epochs
    return dict(run=name, block=block, dataset=dataset, arch=arch, recipe=recipe, augment=augment,
                corruption=corruption, epochs=epochs, checkpoints=ck, width=width, normalization=normalization,
                smoothing=smoothing, mixup=mixup)


CIFAR_CNN_CK = (2, 5, 10, 20, 30)
CIFAR_RES_CK = (2, 5, 10, 20, 25)


def default_grid() -> list[dict]:
    """All runs, in build priority order, so that a partial build is usable early: the cheap full-data MLP runs
    (clean and noisy per data set), then the core of CIFAR-10 (clean and 40 % noise, CNN with and without
    augmentation, ResNet-8 with augmentation), then a clean and a 40 %-noise full-data CNN per data set, then more
    CIFAR-10 noise levels; then the small underfit CNNs ('small', estimator v4) and the rest of CIFAR-10 and the
    full-data CNNs at 20 % noise ('more', estimator v4.1), then the full-data ResNet-8 and the last full-data CNN runs
    ('extra', estimator v4.1). The default build (every block) is the zoo of zoo/REALUSE.md."""
    g = []
    full = ("mnist", "fashion-mnist")
    for d in full:  # full-data MLPs: ~2.5 CPU-s per epoch
        g += [_run("full-mlp", d, "mlp", "adamcos", "none", 0, 10),
              _run("full-mlp", d, "mlp", "adamconst", "none", 40, 20)]
    for d in full:
        g += [_run("full-mlp", d, "mlp", "adamconst", "none", 20, 20),
              _run("full-mlp", d, "mlp", "adamconst", "none", 0, 20),
              _run("full-mlp", d, "mlp", "adamcos", "none", 20, 10),
              _run("full-mlp", d, "mlp", "adamcos", "none", 40, 10)]
    cnn = lambda aug, c: _run("cifar", "cifar10", "cnn", "sgdcos", aug, c, 30, CIFAR_CNN_CK)  # noqa: E731
    res = lambda aug, c: _run("cifar", "cifar10", "resnet", "sgdcos", aug, c, 25, CIFAR_RES_CK)  # noqa: E731
    adam = lambda aug, c: _run("cifar", "cifar10", "cnn", "adamcos", aug, c, 30, CIFAR_CNN_CK,  # noqa: E731
                               normalization="none")
    g += [cnn("crop4flip", 0), cnn("crop4flip", 40), cnn("none", 0), cnn("none", 40),
          res("crop4flip", 0), res("crop4flip", 40)]
    for d in full:  # full-data CNN: ~20 CPU-s per epoch
        g += [_run("full-cnn", d, "cnn", "sgd1cyc", "shift2", 0, 6),
              _run("full-cnn", d, "cnn", "adamconst", "none", 40, 8)]
    for d in full:  # small: full-data CNNs of 1-2 channels that underfit (as small published models do)
        g += [_run("small", d, "cnn", "adamconst", "none", 0, 5, width=1),
              _run("small", d, "cnn", "sgd1cyc", "shift2", 0, 5, width=2),
              _run("small", d, "cnn", "adamconst", "none", 20, 5, width=1)]
    # block 'more': built after the first hour on the shared machine (with estimator v4.1, see REALUSE.md)
    more = lambda r: dict(r, block="more")  # noqa: E731
    g += [cnn("crop4flip", 20), cnn("crop4flip", 60), cnn("none", 20)]
    g += [more(r) for r in (
        cnn("none", 60),
        adam("crop4flip", 0), adam("none", 40), res("crop4flip", 20), res("none", 0),
        res("crop4flip", 60), res("none", 40), adam("crop4flip", 40), adam("none", 0),
        _run("cifar", "cifar10", "cnn", "sgdcos", "crop4flip", 0, 30, CIFAR_CNN_CK, width=32))]
    for d in full:
        g += [more(_run("full-cnn", d, "cnn", "adamconst", "none", 20, 8)),
              more(_run("full-cnn", d, "cnn", "sgd1cyc", "shift2", 20, 6))]
    for d in full:  # extras (built with estimator v4.1)
        g += [_run("extra", d, "cnn", "sgd1cyc", "shift2", 40, 6),
              _run("extra", d, "cnn", "adamconst", "none", 0, 8),
              _run("extra", d, "resnet", "sgd1cyc", "shift2", 0, 5)]
    return g


def tiny_grid() -> list[dict]:
    return [_run("tiny", "mnist", "mlp", "adamcos", "none", 0, 2),
            _run("tiny", "mnist", "cnn", "sgd1cyc", "shift2", 40, 2),
            _run("tiny", "cifar10", "cnn", "sgdcos", "crop4flip", 20, 3, (1, 3)),
            _run("tiny", "cifar10", "resnet", "sgdcos", "none", 0, 2, (1, 2))]


def fresh_grid() -> list[dict]:
    """CIFAR-10 runs built after the suspects' perturbation study had chosen its rule
    (zoo/study_suspects_views.py), to evaluate it on models and label-noise levels it never saw: 30% and 50% wrong
    labels (nested with the zoo's other levels), new seeds (the run names), CNNs, ResNet-8s and width-32 CNNs,
    with and without augmentation. Built with --fresh into their own folder (default zoo/fresh), never into the
    real-use zoo the estimator is fitted on."""
    cnn = lambda aug, c, **kw: _run("fresh", "cifar10", "cnn", "sgdcos", aug, c, 30, CIFAR_CNN_CK, **kw)  # noqa: E731
    res = lambda aug, c: _run("fresh", "cifar10", "resnet", "sgdcos", aug, c, 25, CIFAR_RES_CK)  # noqa: E731
    return [cnn("crop4flip", 30), cnn("crop4flip", 50), cnn("none", 30), cnn("none", 50),
            res("crop4flip", 30), res("none", 50),
            _run("fresh", "cifar10", "cnn", "adamcos", "crop4flip", 50, 30, CIFAR_CNN_CK, normalization="none"),
            cnn("crop4flip", 30, width=32), cnn("none", 60, width=32)]


def fresh2_grid() -> list[dict]:
    """CIFAR-10 runs built after stage 3 of the suspects' perturbation study had fixed its rule (a run's checkpoints
    with the last one's doubt on shifted images), to evaluate it: 25% and 45% wrong labels, new seeds (the run
    names carry "f2"), the same families as fresh_grid. Built with --fresh2 into their own folder (default
    zoo/fresh2)."""
    cnn = lambda aug, c, **kw: _run("fresh2", "cifar10", "cnn", "sgdcos", aug, c, 30, CIFAR_CNN_CK, **kw)  # noqa: E731
    res = lambda aug, c: _run("fresh2", "cifar10", "resnet", "sgdcos", aug, c, 25, CIFAR_RES_CK)  # noqa: E731
    runs = [cnn("crop4flip", 25), cnn("crop4flip", 45), cnn("none", 25), cnn("none", 45), res("crop4flip", 45),
            res("none", 25), _run("fresh2", "cifar10", "cnn", "adamcos", "none", 25, 30, CIFAR_CNN_CK,
                                  normalization="none"), cnn("crop4flip", 45, width=32)]
    return [dict(r, run=r["run"] + "_f2") for r in runs]


def recipes_grid() -> list[dict]:
    """Runs trained with two regularizers common in practice that no model of the estimator's zoos used: label
    smoothing 0.1 and mixup (Beta(0.2, 0.2)), on the real-use zoo's full-data MLP (Adam, cosine, 10 epochs) and CNN
    (SGD OneCycle, shifts, 6 epochs) recipes, clean labels, a checkpoint per epoch; then on its CIFAR-10 recipes
    (below). Built with --recipes into their own folder (default zoo/recipes) after genaudit 0.5.5's estimator was
    fixed, to evaluate it (`zoo/study_fresh_estimate.py --folders recipes`), against the validity issue's targets
    for well-trained full-data models, fixed before the first build: MAE <= 0.03, and no worse than training
    accuracy read as the estimate, per data set. It only measures; nothing is chosen or fitted on these runs."""
    runs = []
    for d in ("mnist", "fashion-mnist"):
        for extra in (dict(smoothing=0.1), dict(mixup=0.2)):
            runs += [_run("recipes", d, "mlp", "adamcos", "none", 0, 10, **extra),
                     _run("recipes", d, "cnn", "sgd1cyc", "shift2", 0, 6, **extra)]
    # added after the full-data runs were measured, before these were built: the same two regularizers on the
    # real-use zoo's CIFAR-10 recipes (CNN and ResNet-8, crop + flip, SGD cosine, clean labels), read against the
    # targets for natural images: MAE <= 0.05, 90% coverage >= 0.85, Kendall tau above training accuracy's
    for extra in (dict(smoothing=0.1), dict(mixup=0.2)):
        runs += [_run("recipes", "cifar10", "cnn", "sgdcos", "crop4flip", 0, 30, CIFAR_CNN_CK, **extra),
                 _run("recipes", "cifar10", "resnet", "sgdcos", "crop4flip", 0, 25, CIFAR_RES_CK, **extra)]
    return runs


def clutter_grid() -> list[dict]:
    """mnist-clutter runs (`cluttered`), built with --clutter into their own folder (default zoo/clutter) for
    zoo/study_clutter.py: the CIFAR-10 block's recipes on a data set whose neighbours are as poor judges as CIFAR-10's
    for a reason other than wrong labels. CNNs (SGD, cosine, 30 epochs) with and without +-2 px shifts at 0, 20, 40
    and 60% wrong labels; ResNet-8s (25 epochs) with and without shifts at 0 and 40%; five checkpoints each, from
    underfit to memorized."""
    cnn = lambda aug, c: _run("clutter", "mnist-clutter", "cnn", "sgdcos", aug, c, 30, CIFAR_CNN_CK)  # noqa: E731
    res = lambda aug, c: _run("clutter", "mnist-clutter", "resnet", "sgdcos", aug, c, 25, CIFAR_RES_CK)  # noqa: E731
    return [cnn(aug, c) for c in (0, 40, 20, 60) for aug in ("shift2", "none")] + \
        [res(aug, c) for c in (0, 40) for aug in ("shift2", "none")]


TINY_SIZES = dict(full_train=3000, full_hold=1000, audit=1000, cifar_train=600)


def run_seed(base_seed: int, run: str) -> int:
    return (base_seed * 1_000_003 + zlib.crc32(run.encode())) % (2**31)


def hyperparameters(job: dict, train_size: int) -> dict:
    r = RECIPES[job["recipe"]]
    return dict(width=job["width"], optimizer=r["optimizer"], lr=r["lr"], schedule=r["schedule"],
                momentum=r["momentum"], nesterov=r["nesterov"], weight_decay=r["weight_decay"],
                batch_size=BATCH_SIZE, epochs=job["epochs"], augment=job["augment"],
                normalization=job["normalization"], corruption=job["corruption"], train_size=train_size,
                label_smoothing=job.get("smoothing", 0.0), mixup=job.get("mixup", 0.0))


def recipe_text(job: dict) -> str:
    r = RECIPES[job["recipe"]]
    opt = (f"SGD momentum {r['momentum']}{' Nesterov' if r['nesterov'] else ''}, weight decay {r['weight_decay']:g}"
           if r["optimizer"] == "sgd" else f"Adam, weight decay {r['weight_decay']:g}")
    sched = {"cosine": f"cosine from lr {r['lr']:g} to 0", "constant": f"constant lr {r['lr']:g}",
             "onecycle": f"OneCycle, peak lr {r['lr']:g}"}[r["schedule"]]
    aug = {"none": "no augmentation", "shift2": "random shift +-2 px (zero pad 2 + random 28x28 crop)",
           "crop4flip": "random crop 32x32 from 4 px zero padding + horizontal flip"}[job["augment"]]
    norm = ("(x/255 - mean)/std inside the model" if job["normalization"] == "meanstd"
            else "x/255, no normalization")
    width = f"width {job['width']}" if job["arch"] != "mlp" else "784-512-256-10"
    extra = "".join([f", label smoothing {job['smoothing']:g}" if job.get("smoothing") else "",
                     f", mixup Beta({job['mixup']:g}, {job['mixup']:g})" if job.get("mixup") else ""])
    return (f"{job['arch']} ({width}), {opt}, {sched} per step, batch {BATCH_SIZE}, {job['epochs']} epochs, {aug}, "
            f"{norm}, {job['corruption']}% uniform label noise{extra}")


# ----------------------------------------------------------------------------------------------- data


def dataset_seed(base_seed: int, dataset: str) -> int:
    return base_seed * 7919 + DATASETS.index(dataset) + 1


def load_dataset(dataset: str, data_root: Path, cifar_root: Path, seed: int, tiny: bool) -> dict:
    """Deterministic training / audited / holdout arrays of a data set (uint8), and the label noise per level.

    Returns x_train, y_train (true), audit (indices into x_train of the audited subset), x_hold, y_hold,
    hold_index (and hold_source for CIFAR), noisy(percent) -> labels used for the whole training set."""
    dseed = dataset_seed(seed, dataset)
    if dataset == "cifar10":
        tr = np.load(cifar_root / "train_prefixes.npz")
        te = np.load(cifar_root / "test_first1017.npz")
        x_all, y_all = tr["x"].astype(np.uint8), tr["y"].astype(np.int64)
        n_train = TINY_SIZES["cifar_train"] if tiny else CIFAR_TRAIN
        itr = stratified_subset(y_all, n_train, dseed + 300)
        rest = np.setdiff1d(np.arange(len(y_all)), itr)
        x_hold = np.concatenate([x_all[rest], te["x"].astype(np.uint8)])
        y_hold = np.concatenate([y_all[rest], te["y"].astype(np.int64)])
        hold_index = np.concatenate([rest, np.arange(len(te["y"]))])
        hold_source = np.array(["train_prefixes"] * len(rest) + ["test_first1017"] * len(te["y"]))
        if tiny:
            keep = stratified_subset(y_hold, 500, dseed + 100)
            x_hold, y_hold, hold_index, hold_source = x_hold[keep], y_hold[keep], hold_index[keep], hold_source[keep]
        data = dict(x_train=x_all[itr], y_train=y_all[itr], train_index=itr, audit=np.arange(len(itr)),
                    x_hold=x_hold, y_hold=y_hold, hold_index=hold_index, hold_source=hold_source)
    elif dataset == "mnist-clutter":
        x_tr, y_tr = load_split(data_root, "mnist", train=True)
        x_te, y_te = load_split(data_root, "mnist", train=False)
        n_train = TINY_SIZES["cifar_train"] if tiny else CLUTTER["train"]
        itr = stratified_subset(y_tr, n_train, dseed + 300)
        ite = stratified_subset(y_te, 500, dseed + 100) if tiny else np.arange(len(y_te))
        data = dict(x_train=cluttered(x_tr[itr], dseed + 400), y_train=y_tr[itr], train_index=itr,
                    audit=np.arange(len(itr)), x_hold=cluttered(x_te[ite], dseed + 401), y_hold=y_te[ite],
                    hold_index=ite, hold_source=None)
    else:
        x_tr, y_tr = load_split(data_root, dataset, train=True)
        x_te, y_te = load_split(data_root, dataset, train=False)
        itr = np.arange(len(y_tr))
        ite = np.arange(len(y_te))
        if tiny:
            itr = stratified_subset(y_tr, TINY_SIZES["full_train"], dseed + 500)
            ite = stratified_subset(y_te, TINY_SIZES["full_hold"], dseed + 100)
        n_audit = TINY_SIZES["audit"] if tiny else AUDIT_SIZE
        audit = stratified_subset(y_tr[itr], n_audit, dseed + 300)
        data = dict(x_train=x_tr[itr], y_train=y_tr[itr], train_index=itr, audit=audit,
                    x_hold=x_te[ite], y_hold=y_te[ite], hold_index=ite, hold_source=None)
    data["seed"] = dseed
    return data


def cluttered(x: np.ndarray, seed: int) -> np.ndarray:
    """MNIST digits (N x 1 x 28 x 28 uint8) as mnist-clutter shows them, after Larochelle et al. (2007)'s
    mnist-rot and mnist-back-rand: each rotated by an angle uniform in +-CLUTTER['angle'] degrees, shifted by
    whole pixels uniform in +-CLUTTER['shift'] on each axis, then laid on uniform random noise (each pixel the larger
    of the digit's and the noise's). A data set whose pixel and patch neighbours are poor judges without a single
    wrong label (the patch vote's halves agree on about 0.38 of its images, as on CIFAR-10's), while a CNN still
    learns it. Seeded: the same images every build."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = np.empty_like(x)
    for i, image in enumerate(x[:, 0].astype(np.float32)):
        turned = ndimage.rotate(image, rng.uniform(-CLUTTER["angle"], CLUTTER["angle"]), reshape=False, order=1)
        moved = ndimage.shift(turned, rng.integers(-CLUTTER["shift"], CLUTTER["shift"] + 1, 2), order=0)
        out[i, 0] = np.clip(np.maximum(moved, rng.uniform(0, 255, moved.shape)), 0, 255).astype(np.uint8)
    return out


def noisy_labels(data: dict, percent: int) -> np.ndarray:
    """The labels a run at `percent`% noise trains on (nested across levels, see build_zoo.corrupt_labels)."""
    return corrupt_labels(data["y_train"], percent, data["seed"] + 200)


def train_npz_name(dataset: str, corruption: int) -> str:
    return f"{dataset}_train_c{corruption:02d}.npz"


def write_data_files(dataset: str, data: dict, corruptions, out: Path, log) -> None:
    """{dataset}_train_c{P}.npz (the audited training images, labels used at P%) and {dataset}_holdout.npz."""
    a = data["audit"]
    for c in sorted(set(corruptions)):
        y_used = noisy_labels(data, c)
        _savez(out / train_npz_name(dataset, c), x=data["x_train"][a], y=y_used[a].astype(np.int64),
               y_true=data["y_train"][a], index=data["train_index"][a])
    hold = dict(x=data["x_hold"], y=data["y_hold"], index=data["hold_index"])
    if data["hold_source"] is not None:
        hold["source"] = data["hold_source"]
    _savez(out / f"{dataset}_holdout.npz", **hold)
    log(f"{dataset}: {len(data['y_train'])} training images, audited subset {len(a)}, {len(data['y_hold'])} "
        f"holdout images; training files for noise {sorted(set(corruptions))}")


def _savez(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- models


class Normalize(nn.Module):
    """(x - mean) / std per channel: the model takes x/255 (genaudit's default 'unit' preprocessing)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def _cbr(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def build_model(dataset: str, arch: str, width: int, normalization: str) -> nn.Sequential:
    """A plain nn.Sequential whose last module is the classification Linear; its input is the feature layer."""
    c, h, _ = SHAPE[dataset]
    layers: list[nn.Module] = [Normalize(*MEANSTD[dataset])] if normalization == "meanstd" else []
    if arch == "mlp":
        layers += [nn.Flatten(), nn.Linear(c * h * h, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                   nn.Linear(256, NUM_CLASSES)]
    elif arch == "cnn":
        w = width
        layers += _cbr(c, w) + [nn.MaxPool2d(2)] + _cbr(w, 2 * w) + [nn.MaxPool2d(2)] + _cbr(2 * w, 4 * w)
        side = h // 4
        if h == 32:  # CIFAR: a third pooling, 4x4 maps
            layers.append(nn.MaxPool2d(2))
            side = h // 8
        layers += [nn.Flatten(), nn.Linear(4 * w * side * side, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES)]
    elif arch == "resnet":
        w = width
        layers += _cbr(c, w) + [BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, NUM_CLASSES)]
    else:
        raise ValueError(arch)
    return nn.Sequential(*layers)


def export_onnx(model: nn.Module, path: Path, shape) -> None:
    """As zoo/build_zoo.export_onnx, for any input shape: opset 17, input 'input', output 'logits', dynamic batch,
    eval mode (BN running statistics)."""
    import warnings

    model.eval()
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *shape), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, path)


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Random crop of the original size from a zero-padded image (pad 2 for 'shift2', 4 for 'crop4flip', in x/255
    space, i.e. black) and, for 'crop4flip', a horizontal flip with probability 1/2; drawn from `gen`."""
    if kind == "none":
        return x
    pad = 2 if kind == "shift2" else 4
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])  # n x h
    cols = (dx[:, None] + torch.arange(w)[None])  # n x w
    if kind == "crop4flip":
        flip = torch.rand(n, generator=gen) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # n x h x w x C
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def acc_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


# ------------------------------------------------------------------------------------------------ train


def train_run(job: dict, data: dict, log) -> list[dict]:
    t0 = time.perf_counter()
    out, seed, ds = Path(job["out"]), job["seed"], job["dataset"]
    x_train = torch.from_numpy(data["x_train"]).float().div_(255.0)
    y_used = torch.from_numpy(noisy_labels(data, job["corruption"]))
    y_true = torch.from_numpy(data["y_train"])
    audit = torch.from_numpy(data["audit"])
    x_aud, y_aud_used, y_aud_true = x_train[audit], y_used[audit], y_true[audit]
    x_hold = torch.from_numpy(data["x_hold"]).float().div_(255.0)
    y_hold = torch.from_numpy(data["y_hold"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    model = build_model(ds, job["arch"], job["width"], job["normalization"])
    r = RECIPES[job["recipe"]]
    n = len(x_train)
    steps_per_epoch = math.ceil(n / BATCH_SIZE)
    total = steps_per_epoch * job["epochs"]
    if r["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"], nesterov=r["nesterov"],
                              weight_decay=r["weight_decay"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    if r["schedule"] == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    elif r["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=total)
    else:
        sched = None
    hp = hyperparameters(job, n)
    recipe = recipe_text(job)
    entries, steps = [], 0
    for epoch in range(1, job["epochs"] + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        run_correct, run_loss, run_n = 0, 0.0, 0
        for i in range(0, n, BATCH_SIZE):
            idx = perm[i:i + BATCH_SIZE]
            xb, yb = augment_batch(x_train[idx], job["augment"], aug_gen), y_used[idx]
            smoothing = job.get("smoothing", 0.0)
            if job.get("mixup"):  # mixup: a convex mix of the batch with a shuffle of it, labels mixed alike
                lam = float(torch.distributions.Beta(job["mixup"], job["mixup"]).sample())
                other = torch.randperm(len(idx), generator=aug_gen)
                logits = model(lam * xb + (1 - lam) * xb[other])
                loss = lam * F.cross_entropy(logits, yb, label_smoothing=smoothing) + \
                    (1 - lam) * F.cross_entropy(logits, yb[other], label_smoothing=smoothing)
            else:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            steps += 1
            run_correct += int((logits.detach().argmax(1) == yb).sum())
            run_loss += float(loss.detach()) * len(idx)
            run_n += len(idx)
        if not math.isfinite(run_loss):
            log(f"  e{epoch}: loss is not finite; stopping this run")
            break
        if epoch not in job["checkpoints"]:
            continue
        la = predict(model, x_aud)
        lh = predict(model, x_hold)
        tr_acc, tr_loss = acc_loss(la, y_aud_used)
        tr_true, _ = acc_loss(la, y_aud_true)
        ho_acc, ho_loss = acc_loss(lh, y_hold)
        name = f"{job['run']}_e{epoch:03d}.onnx"
        export_onnx(model, out / name, SHAPE[ds])
        entries.append(dict(
            file=name, dataset=ds, arch=job["arch"], run=job["run"], group=job["group"], groups=job["groups"],
            block=job["block"], recipe_name=job["recipe"], final=epoch == job["epochs"], epoch=epoch,
            checkpoint=job["checkpoints"].index(epoch) + 1, steps=steps, hyperparameters=hp,
            corruption=job["corruption"], holdout_accuracy=ho_acc, holdout_loss=ho_loss,
            train_accuracy=tr_acc, train_loss=tr_loss, train_accuracy_true_labels=tr_true,
            train_running_accuracy=run_correct / run_n, train_running_loss=run_loss / run_n,
            train_npz=train_npz_name(ds, job["corruption"]), holdout_npz=f"{ds}_holdout.npz",
            train_size=int(n), audit_samples=int(len(audit)), holdout_samples=int(len(y_hold)),
            normalization=job["normalization"], model_input="uint8 pixels / 255 (genaudit's default 'unit')",
            recipe=recipe, seed=int(seed), seconds=round(time.perf_counter() - t0, 1),
            lr_at_checkpoint=float(opt.param_groups[0]["lr"])))
        log(f"  e{epoch:3d}  train {tr_acc:.4f} (true labels {tr_true:.4f}, running {run_correct / run_n:.4f})  "
            f"holdout {ho_acc:.4f}  [{time.perf_counter() - t0:.0f} s]")
    return entries


_DATA: dict = {}


def _run_job(job: dict) -> tuple[int, list[dict], list[str], float, float]:
    """In a fresh spawned worker (maxtasksperchild=1): load the run's data set, train, export."""
    torch.set_num_threads(job["threads"])
    torch.use_deterministic_algorithms(True)
    t, cpu = time.perf_counter(), time.process_time()
    key = job["dataset"]
    if key not in _DATA:
        _DATA[key] = load_dataset(key, Path(job["data_root"]), Path(job["cifar_root"]), job["base_seed"], job["tiny"])
    lines: list[str] = []
    entries = train_run(job, _DATA[key], lines.append)
    return job["index"], entries, lines, time.perf_counter() - t, time.process_time() - cpu


# ------------------------------------------------------------------------------------------------ groups


GROUP_KEYS = ("recipe", "augment", "normalization", "width", "corruption")


def regroup(entries: list[dict]) -> None:
    """Recompute block, group and groups of manifest entries over the runs present in them (see assign_groups)."""
    runs = {}
    blocks = {j["run"]: j["block"] for j in default_grid()}
    for e in entries:
        e["block"] = blocks.get(e["run"], e["block"])  # the block the run has in the current grid
        hp = e["hyperparameters"]
        runs.setdefault(e["run"], dict(run=e["run"], block=e["block"], dataset=e["dataset"], arch=e["arch"],
                                       recipe=e["recipe_name"], augment=hp["augment"],
                                       normalization=hp["normalization"], width=hp["width"],
                                       corruption=e["corruption"]))
    assign_groups(list(runs.values()))
    for e in entries:
        e["group"], e["groups"] = runs[e["run"]]["group"], runs[e["run"]]["groups"]


def assign_groups(jobs: list[dict]) -> None:
    """group = the run's block; groups = one-at-a-time groups (as in the sweep manifest): for each setting h of
    (recipe, augment, normalization, width, corruption), the runs of the same data set and arch
    that differ from this one only in h. Named 'h|fixed settings'; only groups of >= 2 runs are listed."""
    keys = GROUP_KEYS
    for j in jobs:
        j["group"] = j["block"]
        gs = []
        for h in keys:
            others = {k: j[k] for k in keys if k != h}
            members = [o for o in jobs if o["dataset"] == j["dataset"] and o["arch"] == j["arch"]
                       and all(o[k] == v for k, v in others.items())]
            if len(members) >= 2:
                gs.append(f"{h}|" + ",".join(f"{k}={v}" for k, v in others.items()))
        j["groups"] = gs


# ------------------------------------------------------------------------------------------------ summary


def summarize(entries: list[dict]) -> str:
    runs: dict[str, list[dict]] = {}
    for e in entries:
        runs.setdefault(e["run"], []).append(e)
    out = ["| run | data set | arch | recipe | aug | norm | noise % | epochs | final train acc (labels used / true) "
           "| best holdout (epoch) | final holdout | final - best | build s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gaps = []
    for name, es in runs.items():
        es = sorted(es, key=lambda e: e["epoch"])
        fin = es[-1]
        best = max(es, key=lambda e: e["holdout_accuracy"])
        hp = fin["hyperparameters"]
        gap = fin["holdout_accuracy"] - best["holdout_accuracy"]
        gaps.append(gap)
        out.append(f"| {name} | {fin['dataset']} | {fin['arch']}{'' if fin['arch'] == 'mlp' else ' w' + str(hp['width'])} "
                   f"| {fin['recipe_name']} | {hp['augment']} | {hp['normalization']} | {fin['corruption']} "
                   f"| {fin['epoch']}{'' if fin['final'] else ' (incomplete)'} "
                   f"| {fin['train_accuracy']:.4f} / {fin['train_accuracy_true_labels']:.4f} "
                   f"| {best['holdout_accuracy']:.4f} ({best['epoch']}) | {fin['holdout_accuracy']:.4f} "
                   f"| {100 * gap:+.2f} | {fin['seconds']:.0f} |")
    out += ["", f"{len(runs)} runs, {len(entries)} checkpoints (ONNX models). Final checkpoint more than 0.5 points "
            f"below the run's best checkpoint: {sum(g < -0.005 for g in gaps)} of {len(gaps)} runs."]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="output folder (default zoo/realuse; zoo/fresh with --fresh)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="torchvision root with MNIST/ and FashionMNIST/")
    p.add_argument("--cifar-root", type=Path, default=CIFAR_ROOT, help="folder with train_prefixes.npz and "
                   "test_first1017.npz")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1; results do not depend on it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--tiny", action="store_true", help="~30-second smoke build: 4 runs of 2-3 epochs on small subsets")
    p.add_argument("--fresh", action="store_true", help="build the fresh CIFAR-10 runs (fresh_grid) instead, into "
                   "--out (default zoo/fresh)")
    p.add_argument("--fresh2", action="store_true", help="build the second fresh CIFAR-10 runs (fresh2_grid) "
                   "instead, into --out (default zoo/fresh2)")
    p.add_argument("--recipes", action="store_true", help="build the runs with label smoothing and mixup "
                   "(recipes_grid: full-data MNIST / Fashion-MNIST, CIFAR-10) instead, into --out (default "
                   "zoo/recipes)")
    p.add_argument("--clutter", action="store_true", help="build the mnist-clutter runs (clutter_grid) instead, "
                   "into --out (default zoo/clutter)")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    p.add_argument("--summarize", type=Path, metavar="DIR", help="print the summary table of DIR/manifest.json")
    p.add_argument("--blocks", type=str, default="full-mlp,cifar,full-cnn,small,more,extra",
                   help="comma-separated blocks to build: full-mlp, cifar, full-cnn, small, more, extra (default: the "
                        "all six)")
    p.add_argument("--runs", type=str, default=None, help="only runs whose name matches this regular expression")
    p.add_argument("--skip-existing", action="store_true", help="skip runs whose final checkpoint is already in "
                   "the manifest and on disk")
    p.add_argument("--max-epochs", type=int, default=None, help="(timing only) truncate every run to this many "
                   "epochs, checkpoint at the last; do not use for the zoo")
    p.add_argument("--regroup", type=Path, metavar="DIR", help="recompute the one-at-a-time groups of "
                   "DIR/manifest.json over the runs it holds, rewrite it and exit (builds do this themselves)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.regroup:
        path = args.regroup / "manifest.json"
        entries = json.loads(path.read_text())
        regroup(entries)
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
        return 0
    if args.summarize:
        print(summarize(json.loads((args.summarize / "manifest.json").read_text())))
        return 0

    if args.out is None:
        folder = "fresh" if args.fresh else "fresh2" if args.fresh2 else "recipes" if args.recipes \
            else "clutter" if args.clutter else "realuse"
        args.out = ROOT / "zoo" / folder
    grid = tiny_grid() if args.tiny else fresh_grid() if args.fresh else fresh2_grid() if args.fresh2 \
        else recipes_grid() if args.recipes else clutter_grid() if args.clutter else default_grid()
    blocks = set(b.strip() for b in args.blocks.split(","))
    everything = grid
    if not any((args.tiny, args.fresh, args.fresh2, args.recipes, args.clutter)):
        grid = [j for j in grid if j["block"] in blocks]
    if args.runs:
        grid = [j for j in grid if re.search(args.runs, j["run"])]
    if args.max_epochs:
        for j in grid:
            j["epochs"] = min(j["epochs"], args.max_epochs)
            j["checkpoints"] = [j["epochs"]]
    assign_groups(everything)
    if args.list:
        for j in grid:
            print(f"{j['run']:44s} {j['block']:9s} epochs {j['epochs']:2d}  ckpts {j['checkpoints']}  groups "
                  f"{len(j['groups'])}")
        print(f"{len(grid)} runs, {sum(len(j['checkpoints']) for j in grid)} checkpoints")
        return 0

    log = lambda *a: print(*a, flush=True)  # noqa: E731
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    old = json.loads(mpath.read_text()) if mpath.exists() else []
    if args.skip_existing:
        done = {e["run"] for e in old if e["final"] and (out / e["file"]).exists()}
        skipped = [j["run"] for j in grid if j["run"] in done]
        grid = [j for j in grid if j["run"] not in done]
        if skipped:
            log(f"skipping {len(skipped)} runs already built: {', '.join(skipped)}")
    names = {j["run"] for j in grid}
    kept = [e for e in old if e["run"] not in names]  # other invocations' runs stay in the manifest
    order = {j["run"]: k for k, j in enumerate(everything)}
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)

    for d in DATASETS:  # the data files (the parent only writes them; workers load their own copy)
        cs = {j["corruption"] for j in grid if j["dataset"] == d}
        if cs:
            data = load_dataset(d, args.data_root, args.cifar_root, args.seed, args.tiny)
            write_data_files(d, data, cs | ({0} if not args.tiny else set()), out, log)
            del data
    jobs = [dict(j, index=k, seed=run_seed(args.seed, j["run"]), out=str(out), data_root=str(args.data_root),
                 cifar_root=str(args.cifar_root), base_seed=args.seed, tiny=args.tiny, threads=args.threads)
            for k, j in enumerate(grid)]
    log(f"{len(jobs)} runs, {sum(len(j['checkpoints']) for j in jobs)} checkpoints, --jobs {args.jobs}")

    def write_manifest(new: list[dict]) -> None:
        entries = sorted(kept + new, key=lambda e: (order.get(e["run"], 10**6), e["run"], e["epoch"]))
        regroup(entries)  # one-at-a-time groups among the runs in the manifest
        tmp = mpath.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, mpath)

    import multiprocessing as mp

    new: list[dict] = []
    timings = []
    pool = mp.get_context("spawn").Pool(max(1, min(args.jobs, len(jobs))), maxtasksperchild=1)
    try:
        for k, (index, entries, lines, seconds, cpu) in enumerate(pool.imap_unordered(_run_job, jobs, chunksize=1), 1):
            job = jobs[index]
            log(f"[{k}/{len(jobs)}] {job['run']} ({seconds:.0f} s wall, {cpu:.0f} s CPU; "
                f"{time.perf_counter() - t0:.0f} s elapsed)")
            for line in lines:
                log(line)
            new += entries
            timings.append(dict(run=job["run"], seconds=round(seconds, 1), cpu_seconds=round(cpu, 1),
                                epochs=job["epochs"]))
            write_manifest(new)
    finally:
        pool.close()
        pool.join()
    wall = time.perf_counter() - t0
    build = dict(runs=len(jobs), models=len(new), wall_seconds=round(wall, 1),
                 run_cpu_seconds=round(sum(t["cpu_seconds"] for t in timings), 1), jobs=args.jobs,
                 threads_per_job=args.threads, tiny=args.tiny, blocks=sorted(blocks), seed=args.seed,
                 torch=torch.__version__, recipes=RECIPES, batch_size=BATCH_SIZE, timings=timings,
                 load_average_at_end=list(os.getloadavg()))
    bpath = out / ("build.json" if not (args.runs or args.skip_existing) else f"build_{int(time.time())}.json")
    bpath.write_text(json.dumps(build, indent=1))
    log(f"\n{len(jobs)} runs, {len(new)} ONNX models -> {mpath}; {wall:.0f} s wall ({wall / 60:.1f} min), "
        f"{build['run_cpu_seconds']:.0f} CPU-s in the runs; load average {os.getloadavg()[0]:.1f}")
    if not args.tiny:
        log(summarize(json.loads(mpath.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
