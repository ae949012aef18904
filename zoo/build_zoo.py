#!/usr/bin/env python
"""Build genaudit's validation model zoo: seeded, CPU-only classifiers with their true held-out accuracy.

    python zoo/build_zoo.py --data-root ../shared/data/torchvision --out zoo/models [--tiny]

Trains small MNIST / Fashion-MNIST classifiers on a fixed stratified subset of the *training* split with a
fraction of the labels corrupted (each corrupted label replaced by a uniformly random *other* class), under
several regularizers and two architectures, and saves every run at several epochs as ONNX (early, peak and
late-memorization checkpoints). ``{out}/manifest.json`` lists every checkpoint with its training accuracy
(against the labels it was trained on and against the true labels) and its accuracy on a fixed stratified
subset of the *test* split (the truth genaudit has to predict without it). The image subsets are written as
``{out}/{dataset}_train.npz`` and ``{out}/{dataset}_holdout.npz`` (x uint8 N x 1 x 28 x 28, y true labels), so
``genaudit score MODEL --data zoo/models/mnist_train.npz`` audits a model on its own training images.

Everything is seeded (subsets, corruption, initialization, batch order, dropout). Runs train in ``--jobs``
(default 2) spawned worker processes with ``torch.set_num_threads(1)`` each, which on 2 cores is several times
faster than one process with 2 threads for batches this small, and gives bit-identical results for any
``--jobs``. See zoo/README.md for the grid, the measured time and the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genaudit.training.regularizers import AL2, NeuronSteadiness

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
ARCHS = ("mlp", "cnn")
REGULARIZERS = ("none", "dropout", "weight_decay", "batch_norm", "al2", "nsr")
CORRUPTIONS = (0, 20, 40, 60, 80, 100)
CHECKPOINTS = (1, 2, 4, 8, 16, 30)
NUM_CLASSES = 10

# Hyper-parameters (one set for every run; see README for why).
LR = 1e-3  # Adam
BATCH_SIZE = 64
DROPOUT_P = 0.5
WEIGHT_DECAY = 5e-4  # L2 penalty added to the gradient (torch.optim.Adam weight_decay)
AL2_LAMBDA0 = 1.0  # the paper's schedule (x1.1 per epoch below 5, x1.01 above), started at 1.0 instead of 0.01:
#                    from 0.01 it needs 66 epochs to reach its plateau (>= 5); from 1.0 it gets there at epoch 17 of 30
NSR_LAMBDA = 0.1  # summed over the 128 feature units ~ the authors' MLP-4 lambda 7.49 averaged over 100 units
NSR_WINDOW = 5

# The default grid. The four classic regularizers get the full grid; AL2 and NSR, the regularizers that act
# directly on the two quantities genaudit measures, a smaller slice (see README).
DEFAULT_GRID = [
    dict(datasets=("mnist", "fashion-mnist"), archs=("mlp", "cnn"),
         regularizers=("none", "dropout", "weight_decay", "batch_norm"), corruptions=CORRUPTIONS),
    dict(datasets=("mnist", "fashion-mnist"), archs=("mlp",),
         regularizers=("al2", "nsr"), corruptions=CORRUPTIONS),
    dict(datasets=("mnist",), archs=("cnn",),
         regularizers=("al2", "nsr"), corruptions=(0, 40, 80)),
]
TINY_GRID = [dict(datasets=("mnist",), archs=("mlp",), regularizers=("none",), corruptions=(0, 50, 100))]


# ----------------------------------------------------------------------------------------------- data


def load_split(data_root: Path, dataset: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images N x 1 x 28 x 28 and int64 labels of a torchvision data set, offline."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[dataset])
    try:
        ds = cls(str(data_root), train=train, download=False)
    except RuntimeError as exc:
        sys.exit(f"error: {DATASETS[dataset]} not found under {data_root} ({exc}); pass --data-root "
                 "pointing at a folder with torchvision's layout (e.g. MNIST/raw/...).")
    x = ds.data.numpy().astype(np.uint8)[:, None]
    y = ds.targets.numpy().astype(np.int64)
    return x, y


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n samples, n/10 per class (remainder to the first classes), seeded."""
    rng = np.random.default_rng(seed)
    per = [n // NUM_CLASSES + (1 if c < n % NUM_CLASSES else 0) for c in range(NUM_CLASSES)]
    idx = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in enumerate(per)]
    return np.sort(np.concatenate(idx))


def corrupt_labels(y: np.ndarray, percent: int, seed: int) -> np.ndarray:
    """Replace round(percent% of N) labels by a uniformly random other class.

    Nested across levels: one seeded order of the samples and one seeded offset (1..9) per sample, so the
    samples corrupted at 20% are also corrupted, with the same wrong label, at 40%, and so on.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    offset = rng.integers(1, NUM_CLASSES, size=len(y))
    k = int(round(len(y) * percent / 100))
    out = y.copy()
    chosen = order[:k]
    out[chosen] = (y[chosen] + offset[chosen]) % NUM_CLASSES
    return out


def prepare_dataset(data_root: Path, dataset: str, n_train: int, n_hold: int, base_seed: int, out: Path,
                    levels) -> dict:
    """Select the seeded subsets, write {out}/{dataset}_train.npz and _holdout.npz, return the arrays.

    The .npz files hold x (uint8 N x 1 x 28 x 28), y (true labels, int64), index (rows of the torchvision
    split) and, in the training file, y_c{P} = the labels the runs at corruption P% were trained on.
    """
    dseed = base_seed * 7919 + list(DATASETS).index(dataset) + 1
    xtr, ytr = load_split(data_root, dataset, train=True)
    xte, yte = load_split(data_root, dataset, train=False)
    itr = stratified_subset(ytr, n_train, dseed)
    ite = stratified_subset(yte, n_hold, dseed + 100)
    used = {f"y_c{c}": corrupt_labels(ytr[itr], c, dseed + 200) for c in levels}
    np.savez(out / f"{dataset}_train.npz", x=xtr[itr], y=ytr[itr], index=itr, **used)
    np.savez(out / f"{dataset}_holdout.npz", x=xte[ite], y=yte[ite], index=ite)
    return dict(x_train=xtr[itr], y_true=ytr[itr], x_hold=xte[ite], y_hold=yte[ite], seed=dseed)


# --------------------------------------------------------------------------------------------- models


def build_model(arch: str, reg: str) -> nn.Sequential:
    """A plain nn.Sequential whose last module is the classification Linear; its input is the feature layer."""
    drop = reg == "dropout"
    bn = reg == "batch_norm"
    if arch == "mlp":  # 784-256-128-10
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, 256)]
        layers += [nn.BatchNorm1d(256)] if bn else []
        layers += [nn.ReLU()] + ([nn.Dropout(DROPOUT_P)] if drop else [])
        layers += [nn.Linear(256, 128)] + ([nn.BatchNorm1d(128)] if bn else [])
        layers += [nn.ReLU()] + ([nn.Dropout(DROPOUT_P)] if drop else [])
        layers += [nn.Linear(128, NUM_CLASSES)]
    elif arch == "cnn":  # conv3x3/2(8)-conv3x3/2(16)-fc128-fc10 (strided convs: 3x cheaper than conv+pool on CPU)
        layers = [nn.Conv2d(1, 8, 3, stride=2, padding=1)] + ([nn.BatchNorm2d(8)] if bn else []) + [nn.ReLU()]
        layers += [nn.Conv2d(8, 16, 3, stride=2, padding=1)] + ([nn.BatchNorm2d(16)] if bn else []) + [nn.ReLU()]
        layers += [nn.Flatten()] + ([nn.Dropout(DROPOUT_P / 2)] if drop else [])
        layers += [nn.Linear(16 * 7 * 7, 128)] + ([nn.BatchNorm1d(128)] if bn else [])
        layers += [nn.ReLU()] + ([nn.Dropout(DROPOUT_P)] if drop else [])
        layers += [nn.Linear(128, NUM_CLASSES)]
    else:
        raise ValueError(arch)
    return nn.Sequential(*layers)


def run_seed(base_seed: int, dataset: str, arch: str, reg: str, corruption: int) -> int:
    """A stable per-run seed (crc32 of the run's name, not Python's salted hash)."""
    return (base_seed * 1_000_003 + zlib.crc32(f"{dataset}/{arch}/{reg}/{corruption}".encode())) % (2**31)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(x[i:i + batch]).argmax(1).numpy() for i in range(0, len(x), batch)])


def export_onnx(model: nn.Module, path: Path) -> None:
    import warnings

    model.eval()
    example = torch.zeros(1, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def train_run(*, dataset, arch, reg, corruption, x_train, y_true, y_used, x_hold, y_hold, epochs, checkpoints,
              out: Path, seed: int, log) -> list[dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(arch, reg)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY if reg == "weight_decay" else 0.0)
    al2 = AL2(lambda0=AL2_LAMBDA0) if reg == "al2" else None
    nsr = NeuronSteadiness(NUM_CLASSES, lam=NSR_LAMBDA, window=NSR_WINDOW) if reg == "nsr" else None
    trunk, head = model[:-1], model[-1]
    yu = torch.from_numpy(y_used)
    run_id = f"{dataset}_{arch}_{reg}_c{corruption:03d}"
    entries = []
    n = len(x_train)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH_SIZE):
            idx = perm[i:i + BATCH_SIZE]
            if len(idx) < 2 and reg == "batch_norm":
                continue
            xb, yb = x_train[idx], yu[idx]
            feats = trunk(xb)
            loss = F.cross_entropy(head(feats), yb)
            if al2 is not None:
                loss = loss + al2(feats)
            if nsr is not None:
                loss = loss + nsr(feats, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if al2 is not None:
            al2.step_epoch()
        if epoch in checkpoints:
            pred_train = predict(model, x_train)
            pred_hold = predict(model, x_hold)
            name = f"{dataset}_{arch}_{reg}_c{corruption}_e{epoch:03d}.onnx"
            export_onnx(model, out / name)
            entry = dict(
                file=name, dataset=dataset, arch=arch, regularizer=reg, corruption=corruption, epoch=epoch,
                run=run_id,
                train_accuracy_used_labels=float(np.mean(pred_train == y_used)),
                train_accuracy_true_labels=float(np.mean(pred_train == y_true)),
                holdout_accuracy=float(np.mean(pred_hold == y_hold)),
                train_samples=int(n), holdout_samples=int(len(x_hold)), seed=int(seed),
            )
            entries.append(entry)
            log(f"  e{epoch:3d}  train(used) {entry['train_accuracy_used_labels']:.3f}  "
                f"train(true) {entry['train_accuracy_true_labels']:.3f}  holdout {entry['holdout_accuracy']:.3f}")
    return entries


# ------------------------------------------------------------------------------------------------ main

_DATA: dict = {}


def _init_worker(data: dict, threads: int) -> None:
    """Per process: fixed thread count, deterministic kernels, the data sets as float tensors in [0, 1]."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    _DATA.clear()
    for d, dd in data.items():
        _DATA[d] = dict(dd, x_train=torch.from_numpy(dd["x_train"]).float().div_(255.0),
                        x_hold=torch.from_numpy(dd["x_hold"]).float().div_(255.0))


def _run_job(job: dict) -> tuple[list[dict], list[str], float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    dd = _DATA[job["dataset"]]
    lines: list[str] = []
    y_used = corrupt_labels(dd["y_true"], job["corruption"], dd["seed"] + 200)
    entries = train_run(dataset=job["dataset"], arch=job["arch"], reg=job["reg"], corruption=job["corruption"],
                        x_train=dd["x_train"], y_true=dd["y_true"], y_used=y_used, x_hold=dd["x_hold"],
                        y_hold=dd["y_hold"], epochs=job["epochs"], checkpoints=job["checkpoints"],
                        out=Path(job["out"]), seed=job["seed"], log=lines.append)
    return entries, lines, time.perf_counter() - t, time.process_time() - cpu



def expand(grid: list[dict], only: dict) -> list[tuple[str, str, str, int]]:
    runs = []
    for block in grid:
        for d in block["datasets"]:
            for a in block["archs"]:
                for r in block["regularizers"]:
                    for c in block["corruptions"]:
                        key = (d, a, r, int(c))
                        if all(only[k] is None or v in only[k] for k, v in zip(("datasets", "archs", "regularizers", "corruptions"), key)):
                            if key not in runs:
                                runs.append(key)
    return runs


def _mean(values) -> str:
    return f"{np.mean(values):.3f}" if len(values) else "–"


def summary_table(entries: list[dict], epoch: int) -> str:
    """Markdown: mean holdout accuracy at `epoch` by corruption (rows) and regularizer (columns)."""
    sel = [e for e in entries if e["epoch"] == epoch]
    regs = [r for r in REGULARIZERS if any(e["regularizer"] == r for e in sel)]
    cors = sorted({e["corruption"] for e in sel})
    lines = ["| corruption | " + " | ".join(regs) + " |", "|---|" + "---|" * len(regs)]
    for c in cors:
        cells = []
        for r in regs:
            v = [e["holdout_accuracy"] for e in sel if e["corruption"] == c and e["regularizer"] == r]
            cells.append(f"{np.mean(v):.3f} ({len(v)})" if v else "–")
        lines.append(f"| {c}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(entries: list[dict]) -> str:
    """The README's tables: final-epoch holdout accuracy, memorization by epoch, and per data set / arch."""
    last = max(e["epoch"] for e in entries)
    epochs = sorted({e["epoch"] for e in entries})
    cors = sorted({e["corruption"] for e in entries})
    out = []
    for a in ARCHS:
        sel = [e for e in entries if e["arch"] == a]
        if sel:
            out += [f"{a.upper()}: holdout accuracy at the last checkpoint (epoch {last}), mean over the data sets "
                    "(number of runs in parentheses):", "", summary_table(sel, last), ""]
    out += ["Memorization across training (all runs, mean per corruption level): training accuracy on the labels "
            "used / holdout accuracy, by checkpoint epoch:", "",
            "| corruption | " + " | ".join(f"e{e}" for e in epochs) + " | peak holdout (epoch) |",
            "|---|" + "---|" * (len(epochs) + 1)]
    for c in cors:
        cells = []
        for ep in epochs:
            sel = [e for e in entries if e["corruption"] == c and e["epoch"] == ep]
            cells.append(f"{_mean([e['train_accuracy_used_labels'] for e in sel])} / "
                         f"{_mean([e['holdout_accuracy'] for e in sel])}")
        hold = {ep: np.mean([e["holdout_accuracy"] for e in entries if e["corruption"] == c and e["epoch"] == ep])
                for ep in epochs}
        peak = max(hold, key=hold.get)
        out.append(f"| {c}% | " + " | ".join(cells) + f" | {hold[peak]:.3f} (e{peak}) |")
    out += ["", f"Holdout accuracy at epoch {last} by data set and architecture (mean over regularizers):", "",
            "| data set / arch | " + " | ".join(f"{c}%" for c in cors) + " |", "|---|" + "---|" * len(cors)]
    for d in DATASETS:
        for a in ARCHS:
            sel = [e for e in entries if e["dataset"] == d and e["arch"] == a and e["epoch"] == last]
            if sel:
                out.append(f"| {d} / {a} | " + " | ".join(
                    _mean([e["holdout_accuracy"] for e in sel if e["corruption"] == c]) for c in cors) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="torchvision root holding MNIST/ and FashionMNIST/")
    p.add_argument("--out", type=Path, help="output folder for ONNX files, manifest.json and .npz subsets")
    p.add_argument("--summarize", type=Path, metavar="DIR", help="only print the summary tables (markdown) of the "
                   "zoo in DIR (its manifest.json) and exit")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke build: MNIST, MLP, no regularizer, "
                   "corruption 0/50/100%%, 300 training / 300 holdout images, checkpoints at epochs 1, 3, 6")
    p.add_argument("--train-size", type=int, default=None, help="training subset size (default 2000; tiny 300)")
    p.add_argument("--holdout-size", type=int, default=None, help="holdout subset size (default 2000; tiny 300)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 30; tiny 6)")
    p.add_argument("--checkpoints", type=str, default=None, help="comma-separated epochs to save (default 1,2,4,8,16,30)")
    p.add_argument("--datasets", type=str, default=None, help="restrict the grid, e.g. mnist")
    p.add_argument("--archs", type=str, default=None, help="restrict the grid, e.g. mlp")
    p.add_argument("--regularizers", type=str, default=None, help="restrict the grid, e.g. none,al2")
    p.add_argument("--corruptions", type=str, default=None, help="restrict the grid, e.g. 0,40,80")
    p.add_argument("--seed", type=int, default=0, help="base seed (subsets, corruption, runs)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes, each training whole runs (default 2; "
                   "tiny 1: starting a worker costs more than a tiny run); results do not depend on it")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1; results are "
                   "bit-identical for any --jobs at a fixed --threads)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(json.loads((args.summarize / "manifest.json").read_text())))
        return 0
    if args.data_root is None or args.out is None:
        p.error("--data-root and --out are required (unless --summarize)")

    torch.set_num_threads(args.threads)  # before any torch work: kernels are chosen for the thread count in force
    torch.use_deterministic_algorithms(True)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    if args.tiny:
        grid, n_train, n_hold, epochs, ckpts = TINY_GRID, 300, 300, 6, (1, 3, 6)
    else:
        grid, n_train, n_hold, epochs, ckpts = DEFAULT_GRID, 2000, 2000, 30, CHECKPOINTS
    n_train = args.train_size or n_train
    n_hold = args.holdout_size or n_hold
    epochs = args.epochs or epochs
    if args.checkpoints:
        ckpts = tuple(int(v) for v in args.checkpoints.split(","))
    ckpts = tuple(sorted({c for c in ckpts if 1 <= c <= epochs} | {epochs}))

    def listed(s, cast=str):
        return None if s is None else tuple(cast(v.strip()) for v in s.split(",") if v.strip())

    only = dict(datasets=listed(args.datasets), archs=listed(args.archs), regularizers=listed(args.regularizers),
                corruptions=listed(args.corruptions, int))
    if args.tiny:  # restrictions may widen the tiny grid to any value of a dimension
        grid = [{**grid[0], **{k: v for k, v in only.items() if v is not None}}]
    runs = expand(grid, only)
    if not runs:
        p.error("the grid restrictions leave no run")
    for d, a, r, c in runs:
        if d not in DATASETS or a not in ARCHS or r not in REGULARIZERS or not 0 <= c <= 100:
            p.error(f"unknown grid value in {(d, a, r, c)}")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {}
    for d in sorted({r[0] for r in runs}, key=list(DATASETS).index):
        levels = sorted(set(CORRUPTIONS) | {r[3] for r in runs if r[0] == d})
        data[d] = prepare_dataset(args.data_root, d, n_train, n_hold, args.seed, out, levels)
        log(f"{d}: {n_train} training images (train split), {n_hold} holdout images (test split)")

    jobs = [dict(dataset=d, arch=a, reg=r, corruption=c, seed=run_seed(args.seed, d, a, r, c), epochs=epochs,
                 checkpoints=ckpts, out=str(out)) for d, a, r, c in runs]
    entries: list[dict] = []
    timings, cpu_times = [], []
    n_jobs = max(1, min(args.jobs or (1 if args.tiny else 2), len(jobs)))
    # Runs always train in spawned worker processes, even with --jobs 1: a worker holds only the data subsets, so
    # a run's numbers do not depend on what the parent process did before (oneDNN's convolution kernels were seen
    # to round differently in a process that had first loaded the full torchvision data sets).
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(n_jobs, initializer=_init_worker, initargs=(data, args.threads))
    results = pool.imap(_run_job, jobs)
    try:
        for k, (job, (run_entries, lines, seconds, cpu)) in enumerate(zip(jobs, results), 1):
            log(f"[{k}/{len(jobs)}] {job['dataset']} {job['arch']} {job['reg']} corruption {job['corruption']}% "
                f"({seconds:.1f} s)")
            for line in lines:
                log(line)
            entries += run_entries
            timings.append(seconds)
            cpu_times.append(cpu)
            with open(out / "manifest.json", "w") as fh:  # rewritten after every run: a partial build is usable
                json.dump(entries, fh, indent=1)
    finally:
        pool.close()
        pool.join()

    wall = time.perf_counter() - t0
    build = dict(
        runs=len(runs), models=len(entries), wall_seconds=round(wall, 1), epochs=epochs, checkpoints=list(ckpts),
        train_size=n_train, holdout_size=n_hold, seed=args.seed, tiny=args.tiny, torch=torch.__version__,
        jobs=n_jobs, threads_per_job=args.threads, run_seconds=round(float(np.sum(timings)), 1),
        cpu_seconds=round(float(np.sum(cpu_times)), 1),
        hyperparameters=dict(optimizer="Adam", lr=LR, batch_size=BATCH_SIZE, dropout=DROPOUT_P,
                             weight_decay=WEIGHT_DECAY, al2_lambda0=AL2_LAMBDA0, nsr_lambda=NSR_LAMBDA,
                             nsr_window=NSR_WINDOW),
    )
    with open(out / "build.json", "w") as fh:
        json.dump(build, fh, indent=1)
    log(f"\n{len(runs)} runs, {len(entries)} ONNX models in {wall:.0f} s "
        f"(mean {np.mean(timings):.1f} s per run) -> {out / 'manifest.json'}")
    log(f"\nholdout accuracy at epoch {epochs} (mean over runs; count in parentheses):\n" + summary_table(entries, epochs))
    best = {}
    for e in entries:
        best[e["run"]] = max(best.get(e["run"], 0.0), e["holdout_accuracy"])
    log("\npeak holdout accuracy over checkpoints by corruption: " + ", ".join(
        f"{c}%: {np.mean([v for run, v in best.items() if run.endswith(f'_c{c:03d}')]):.3f}"
        for c in sorted({e['corruption'] for e in entries})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
