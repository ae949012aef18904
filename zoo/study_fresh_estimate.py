#!/usr/bin/env python
"""The estimate on models no estimator was fitted on or chosen on: runs built after every choice was made.

- CIFAR-10 (default): the fresh runs (zoo/fresh: 9 runs at 30 / 50 / 60% wrong labels; zoo/fresh2: 8 runs at 25 /
  45%; 85 checkpoints; new seeds; built by `zoo/build_realuse.py --fresh` / `--fresh2` for the suspects study,
  after its rules were fixed; the estimator study never read them). Same data split and recipe families as the
  real-use zoo's CIFAR-10 runs (CNNs and ResNet-8, with and without augmentation; 4,000 training images, held-out
  accuracy on 2,186 others).
- Full-data MNIST / Fashion-MNIST (`--folders fresh_full`): the real-use zoo's 16 full-data recipes (MLPs and CNNs,
  0 / 20 / 40% wrong labels, a checkpoint per epoch) built again with another base seed (`zoo/build_realuse.py
  --seed 1 --out zoo/fresh_full --blocks full-mlp,full-cnn`: other training seeds, audited subsets and wrong labels).
- Recipes with label smoothing 0.1 or mixup (`--folders recipes`, `zoo/build_realuse.py --recipes`: full-data
  MNIST / Fashion-MNIST and CIFAR-10 runs, 12 runs, 84 checkpoints, clean labels), grouped also by data set and
  regularizer.

Each checkpoint is audited as a user would (`genaudit.audit(model, its training .npz, samples=2000, seed=0,
train_size=the images it trained on)`, with labels: the ones it trained on), and two estimators are read against its
held-out accuracy:

- the published one (genaudit/estimate_model.json, fitted on all 1,675 models of the study, the real-use zoo's
  among them): the scorecard's `estimate.accuracy` and `estimate.interval`;
- the study's estimator of the split that holds such models out (`--split`; zoo/study_estimate.py: the form and
  loss its rule chooses on that split's fitting data, fitted and calibrated there): a user's new domain.

Beside them, read as the estimate with nothing fitted: training accuracy, and the model's agreement with the raw
neighbour votes (`diagnostics.neighbours.input.value`, v0.2's pixel vote among the audited samples; and
`diagnostics.neighbours.patches.at_training_size.value`, the patch vote carried to the training set's size, which
the published estimate reads). Per group (all, each data set, its clean-label runs, each share
of wrong labels): MAE, bias, 90% coverage (mean half-width), Kendall τ with held-out accuracy, and the checkpoint
picked within each run (within 2 / 0.5 points of the run's best). Nothing here is chosen: it only measures.

    python zoo/study_fresh_estimate.py                         # -> zoo/validity/fresh_estimate.md and .json
    python zoo/study_fresh_estimate.py --folders fresh_full --split "fit all but realuse full-data -> eval realuse full-data" --name fresh_full_estimate
    python zoo/study_fresh_estimate.py --folders recipes --split "fit all but realuse full-data -> eval realuse full-data" --name recipes_estimate
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import study_estimate as S  # noqa: E402
from study_validity import CACHE, OUT, SAMPLES, SEED, flat  # noqa: E402

ZOO = Path(__file__).resolve().parent
CIFAR_SPLIT = "fit all but CIFAR-10 -> eval CIFAR-10"
VOTES = {"diagnostics.neighbours.input.value": "pixel vote",  # the raw votes read as the estimate, by column name
         "diagnostics.neighbours.patches.at_training_size.value": "patch vote at N"}


def audit(job: tuple[str, str, int]) -> dict:
    """One checkpoint's scorecard numbers and its published estimate and interval."""
    import genaudit

    model, npz, size = job
    card = genaudit.audit(model, npz, samples=SAMPLES, seed=SEED, train_size=size, threads=1)  # two workers
    estimate = card["estimate"]
    return {"card": flat({k: card[k] for k in ("clean_accuracy", "diagnostics")}),
            "published": estimate.get("accuracy"), "interval": estimate.get("interval")}


def records(folders: tuple[str, ...] = ("fresh", "fresh2"), name: str = "fresh_estimate") -> list[dict]:
    """Every checkpoint of `folders` with its audit (cached in CACHE/<name>.json) and held-out accuracy."""
    from multiprocessing import Pool

    entries = []
    for folder in folders:
        for e in json.loads((ZOO / folder / "manifest.json").read_text()):
            entries.append({**e, "path": str(ZOO / folder / e["file"]), "npz_path": str(ZOO / folder / e["train_npz"]),
                            "key": f"{folder}/{e['file']}"})
    store = CACHE / f"{name}.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    todo = [e for e in entries if e["key"] not in done]
    if todo:
        start = time.perf_counter()
        with Pool(2) as pool:
            jobs = [(e["path"], e["npz_path"], e["train_size"]) for e in todo]
            for k, (e, found) in enumerate(zip(todo, pool.imap(audit, jobs)), 1):
                done[e["key"]] = found
                if k % 10 == 0 or k == len(todo):
                    store.write_text(json.dumps(done))
                    print(f"{k} / {len(todo)} checkpoints, {time.perf_counter() - start:.0f} s", flush=True)
    return [{"zoo": "fresh", "dataset": e["dataset"], "run": e["run"], "name": e["key"], "epoch": e["epoch"],
             "corruption": e["corruption"], "holdout": e["holdout_accuracy"], "regularizer": regularizer(e),
             "file": e["path"], "npz": e["npz_path"], **done[e["key"]]} for e in entries]


def regularizer(entry: dict) -> str | None:
    """The training recipe's label smoothing or mixup (`build_realuse.py --recipes`), as a group's name."""
    hp = entry.get("hyperparameters", {})
    return ("label smoothing" if hp.get("label_smoothing") else "mixup" if hp.get("mixup") else None)


def held_out(fresh: list[dict], split: str) -> tuple[str, np.ndarray, np.ndarray]:
    """The estimator of the study's `split` (fitted on its fitting data): its form, estimates and half-widths on
    the fresh records."""
    train, _ = S.splits(S.study_records())[split]
    form, loss, _ = S.choose(train, S.IMAGE_CANDIDATES)
    model = S.calibrate(train, form, loss)
    p, gap, widen = S.predict(model, fresh)
    return f"{form.split(':')[0]} ({'LAD' if loss == S.ABSOLUTE else 'LS'})", p, S.half_width(model, fresh, gap, widen)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--folders", default="fresh,fresh2", help="zoo folders with a manifest.json (default fresh,fresh2)")
    p.add_argument("--split", default=CIFAR_SPLIT, help="the study's split whose estimator holds such models out")
    p.add_argument("--name", default="fresh_estimate", help="output name in zoo/validity (and the audits' cache)")
    args = p.parse_args(argv)
    fresh = S.with_memorized(records(tuple(args.folders.split(",")), args.name))
    form, other, other_half = held_out(fresh, args.split)
    published = np.array([r["published"] for r in fresh], float)
    published_half = np.array([(r["interval"][1] - r["interval"][0]) / 2 for r in fresh], float)
    train = np.array([S.read(r, "train_acc") for r in fresh], float)
    votes = {path: np.array([r["card"].get(path, np.nan) for r in fresh], float) for path in VOTES}
    groups = {"all": list(range(len(fresh)))}
    datasets = sorted({r["dataset"] for r in fresh})
    for dataset in datasets if len(datasets) > 1 else []:
        groups[dataset] = [i for i, r in enumerate(fresh) if r["dataset"] == dataset]
        groups[f"{dataset}, clean labels"] = [i for i, r in enumerate(fresh)
                                              if r["dataset"] == dataset and r["corruption"] == 0]
    for dataset in datasets:  # the recipes' regularizers, where the runs have them
        for kind in sorted({r["regularizer"] for r in fresh if r["regularizer"]}):
            groups[f"{dataset}, {kind}"] = [i for i, r in enumerate(fresh)
                                           if r["dataset"] == dataset and r["regularizer"] == kind]
    for level in sorted({r["corruption"] for r in fresh}):
        groups[f"{level}% wrong labels"] = [i for i, r in enumerate(fresh) if r["corruption"] == level]
    table = {}
    for name, idx in groups.items():
        sub = [fresh[i] for i in idx]
        table[name] = {"published": S.metrics(sub, published[idx], published_half[idx]),
                       "held_out": S.metrics(sub, other[idx], other_half[idx]),
                       "train_acc": S.metrics(sub, train[idx]),
                       **{name: S.metrics(sub, votes[path][idx]) for path, name in VOTES.items()}}
    (OUT / f"{args.name}.json").write_text(json.dumps({"split": args.split, "form": form, "groups": table}, indent=1))

    def cells(m: dict, interval: bool = True) -> str:
        tau = "–" if m["tau"] is None else f"{m['tau']:.3f}"
        cover = f" / {m['coverage_90']:.2f} (±{m['width_90'] / 2:.2f})" if interval else ""
        return f"{m['mae']:.3f} / {m['bias']:+.3f}{cover} / {tau} / {m['pick_2pt']:.2f}, {m['pick_half_pt']:.2f}"

    runs = len({r["run"] for r in fresh})
    options = f' --folders {args.folders} --split "{args.split}" --name {args.name}'
    command = "python zoo/study_fresh_estimate.py" + ("" if args.name == "fresh_estimate" else options)
    lines = [f"# The estimate on fresh runs of {', '.join(datasets)} (never fitted on, never chosen on)", "",
             f"Generated by `{command}` (module docstring). {len(fresh)} checkpoints of "
             f"{runs} runs. Each cell: MAE / bias / 90% coverage (mean half-width) / Kendall τ / picks within 2, 0.5 "
             "points (share of runs); training accuracy and the votes (the model's agreement with them) have no interval.",
             "", f"| group | models | published estimator (fitted with the real-use zoo) | {args.split.split(' ->')[0]} "
             f"({form}) | training accuracy | {' | '.join(VOTES.values())} |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['published']['models']} | {cells(row['published'])} | "
                     f"{cells(row['held_out'])} | {cells(row['train_acc'], interval=False)} | "
                     + " | ".join(cells(row[vote], interval=False) for vote in VOTES.values()) + " |")
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
