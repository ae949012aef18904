#!/usr/bin/env python
"""The estimate on CIFAR-10 models no estimator was fitted on or chosen on: the fresh runs (zoo/fresh: 9 runs at
30 / 50 / 60% wrong labels; zoo/fresh2: 8 runs at 25 / 45%; 85 checkpoints; new seeds; built by
`zoo/build_realuse.py --fresh` / `--fresh2` for the suspects study, after its rules were fixed; the estimator
study never read them). Same data split and recipe families as the real-use zoo's CIFAR-10 runs (CNNs and ResNet-8,
with and without augmentation; 4,000 training images, held-out accuracy on 2,186 others).

Each checkpoint is audited as a user would (`genaudit.audit(model, its training .npz, samples=2000, seed=0)`, with
labels: the noisy labels it trained on), and two estimators are read against its held-out accuracy:

- the published one (genaudit/estimate_model.json, fitted on all 1,675 models of the study, the real-use zoo's
  95 CIFAR-10 models among them): the scorecard's `estimate.accuracy` and `estimate.interval`;
- the study's "fit all but CIFAR-10" estimator (zoo/study_estimate.py: the form and loss its rule chooses on the
  1,580 models that are not CIFAR-10, fitted and calibrated there): a user's new domain.

Beside them, training accuracy read as the estimate. Per group (all, and by share of wrong labels): MAE, bias,
90% coverage, Kendall τ with held-out accuracy, and the checkpoint picked within each run (within 2 / 0.5 points
of the run's best). Nothing here is chosen: it only measures.

    python zoo/study_fresh_estimate.py      # -> zoo/validity/fresh_estimate.md and .json (about 4 minutes)
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
from study_validity import CACHE, OUT, SAMPLES, SEED  # noqa: E402

ZOO = Path(__file__).resolve().parent
FOLDERS = ("fresh", "fresh2")


def flat(block, prefix: str = "") -> dict:
    """A scorecard's numbers under dotted paths (diagnostics.neighbours.patches.value, ...)."""
    out = {}
    for key, value in block.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def audit(job: tuple[str, str]) -> dict:
    """One checkpoint's scorecard numbers and its published estimate and interval."""
    import genaudit

    model, npz = job
    card = genaudit.audit(model, npz, samples=SAMPLES, seed=SEED, threads=1)  # two workers share the cores
    estimate = card["estimate"]
    return {"card": flat({k: card[k] for k in ("clean_accuracy", "diagnostics")}),
            "published": estimate.get("accuracy"), "interval": estimate.get("interval")}


def records() -> list[dict]:
    """Every fresh checkpoint with its audit (cached in CACHE/fresh_estimate.json) and held-out accuracy."""
    from multiprocessing import Pool

    entries = []
    for folder in FOLDERS:
        for e in json.loads((ZOO / folder / "manifest.json").read_text()):
            entries.append({**e, "path": str(ZOO / folder / e["file"]), "npz_path": str(ZOO / folder / e["train_npz"]),
                            "key": f"{folder}/{e['file']}"})
    store = CACHE / "fresh_estimate.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    todo = [e for e in entries if e["key"] not in done]
    if todo:
        start = time.perf_counter()
        with Pool(2) as pool:
            for k, (e, found) in enumerate(zip(todo, pool.imap(audit, [(e["path"], e["npz_path"]) for e in todo])), 1):
                done[e["key"]] = found
                if k % 10 == 0 or k == len(todo):
                    store.write_text(json.dumps(done))
                    print(f"{k} / {len(todo)} checkpoints, {time.perf_counter() - start:.0f} s", flush=True)
    return [{"zoo": "fresh", "dataset": "cifar10", "run": e["run"], "name": e["key"], "epoch": e["epoch"],
             "corruption": e["corruption"], "holdout": e["holdout_accuracy"], **done[e["key"]]} for e in entries]


def never_cifar(fresh: list[dict]) -> tuple[str, np.ndarray, np.ndarray]:
    """The "fit all but CIFAR-10" estimator's form, estimates and half-widths on the fresh records."""
    study = [r for r in S.study_records() if r["dataset"] != "cifar10"]
    form, loss, _ = S.choose(study)
    model = S.calibrate(study, form, loss)
    p, gap, widen = S.predict(model, fresh)
    return f"{form.split(':')[0]} ({'LAD' if loss == S.ABSOLUTE else 'LS'})", p, S.half_width(model, fresh, gap, widen)


def main() -> int:
    fresh = S.with_memorized(records())
    form, never, never_half = never_cifar(fresh)
    published = np.array([r["published"] for r in fresh], float)
    published_half = np.array([(r["interval"][1] - r["interval"][0]) / 2 for r in fresh], float)
    train = np.array([S.read(r, "train_acc") for r in fresh], float)
    groups = {"all": list(range(len(fresh)))}
    for level in sorted({r["corruption"] for r in fresh}):
        groups[f"{level}% wrong labels"] = [i for i, r in enumerate(fresh) if r["corruption"] == level]
    table = {}
    for name, idx in groups.items():
        sub = [fresh[i] for i in idx]
        table[name] = {"published": S.metrics(sub, published[idx], published_half[idx]),
                       "never_cifar": S.metrics(sub, never[idx], never_half[idx]),
                       "train_acc": S.metrics(sub, train[idx])}
    (OUT / "fresh_estimate.json").write_text(json.dumps({"never_cifar_form": form, "groups": table}, indent=1))

    def cells(m: dict, interval: bool = True) -> str:
        tau = "–" if m["tau"] is None else f"{m['tau']:.3f}"
        cover = f" / {m['coverage_90']:.2f} (±{m['width_90'] / 2:.2f})" if interval else ""
        return f"{m['mae']:.3f} / {m['bias']:+.3f}{cover} / {tau} / {m['pick_2pt']:.2f}, {m['pick_half_pt']:.2f}"

    runs = len({r["run"] for r in fresh})
    lines = ["# The estimate on fresh CIFAR-10 runs (never fitted on, never chosen on)", "",
             f"Generated by `python zoo/study_fresh_estimate.py` (module docstring). {len(fresh)} checkpoints of "
             f"{runs} runs. Each cell: MAE / bias / 90% coverage (mean half-width) / Kendall τ / picks within 2, 0.5 "
             "points (share of runs); training accuracy has no interval.", "",
             f"| group | models | published estimator (fitted with the real-use zoo's CIFAR-10) | fit all but CIFAR-10 "
             f"({form}) | training accuracy |", "|---|---:|---:|---:|---:|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['published']['models']} | {cells(row['published'])} | "
                     f"{cells(row['never_cifar'])} | {cells(row['train_acc'], interval=False)} |")
    (OUT / "fresh_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
