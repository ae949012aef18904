#!/usr/bin/env python
"""Explored, not shipped: would a patch space with more k-means centroids be a better reference on CIFAR-10?

The patch space (genaudit/patches.py) encodes each image against 128 centroids (Coates & Ng's single-layer
features, 512 values per image). Coates & Ng found their features' quality grows with the number of centroids. On
CIFAR-10 the patch vote is still a weak reference: the labels' own agreement with it is about 0.38 on clean runs, and
read as the estimate the vote carried to the training set's size errs 0.10-0.11. This measures, with nothing
fitted, the same vote in spaces of 128 (today's; it must reproduce the study's cache) and 512 centroids, on:

- the real-use zoo's 95 CIFAR-10 checkpoints (predictions from the study's cache, zoo/validity/cache/realuse);
- the 85 fresh CIFAR-10 checkpoints (zoo/fresh, zoo/fresh2; their predictions computed here with onnxruntime on
  the same 2,000 audited images).

Per set and space: the labels' agreement with the vote on the clean-label runs (the reference's own quality),
and the model's agreement with the vote carried to the training set's size read as the estimate (MAE, bias and
Kendall τ against held-out accuracy). A measurement for a later study, not a candidate: no estimator is refitted.

    python zoo/explore_centroids.py      # -> zoo/validity/centroids.md and .json (a few minutes)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_estimate import patch_votes  # noqa: E402
from study_validity import CACHE, OUT, SAMPLES, SEED, kendall, zoo_entries  # noqa: E402

ZOO = Path(__file__).resolve().parent
SETTINGS = (128, 512)  # centroids: today's space, and four times as many


def entries() -> dict[str, list[dict]]:
    """The CIFAR-10 checkpoints of each set: name, model file, training .npz, held-out accuracy, corruption, size."""
    realuse = [{"name": e["name"], "file": e["file"], "npz": e["npz"], "holdout": e["holdout"],
                "corruption": e["corruption"], "size": e["hp"].get("train_size") or 4000,
                "pred": CACHE / "realuse" / f"{Path(e['name']).stem}.npz"}
               for e in zoo_entries("realuse") if e["dataset"] == "cifar10"]
    fresh = []
    for folder in ("fresh", "fresh2"):
        for e in json.loads((ZOO / folder / "manifest.json").read_text()):
            fresh.append({"name": f"{folder}/{e['file']}", "file": str(ZOO / folder / e["file"]),
                          "npz": str(ZOO / folder / e["train_npz"]), "holdout": e["holdout_accuracy"],
                          "corruption": e["corruption"], "size": e["train_size"], "pred": None})
    return {"real-use zoo": realuse, "fresh runs": fresh}


def predictions(entry: dict, x: np.ndarray) -> np.ndarray:
    """The checkpoint's predicted classes on the audited images: from the study's cache, or run here."""
    if entry["pred"] is not None:
        return np.load(entry["pred"])["pred"].astype(np.int64)
    import onnxruntime as ort

    session = ort.InferenceSession(entry["file"], providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])


def measure() -> dict:
    import genaudit.patches as patches
    from genaudit.data import load_data

    out: dict = {}
    try:
        for label, group in entries().items():
            rows = {str(k): [] for k in SETTINGS}
            for npz in sorted({e["npz"] for e in group}):
                ds = load_data(npz, samples=SAMPLES, seed=SEED)  # the samples the study audited
                labels = np.asarray(ds.y)
                x = ds.preprocess(ds.x)
                models = [e for e in group if e["npz"] == npz]
                preds = [predictions(e, x) for e in models]
                for k in SETTINGS:
                    start = time.perf_counter()
                    patches.CENTROIDS = k
                    space = patches.patch_features(patches.prepared(x), SEED)
                    votes = patch_votes(space, labels, [(pred, int(e["size"])) for e, pred in zip(models, preds)])
                    for e, pred, v in zip(models, preds, votes):
                        rows[str(k)].append({"name": e["name"], "holdout": e["holdout"],
                                             "corruption": e["corruption"], "train_acc": float(np.mean(pred == labels)),
                                             "reference_agreement": v["reference_agreement"],
                                             "vote_consistency": v["vote_consistency"],
                                             "at_size": v["at_training_size.value"]})
                    print(f"{label} {Path(npz).name} {k} centroids: {len(models)} models, "
                          f"{time.perf_counter() - start:.1f} s", flush=True)
            out[label] = rows
    finally:
        patches.CENTROIDS = SETTINGS[0]
    return out


def summary(rows: list[dict]) -> dict:
    holdout = np.array([r["holdout"] for r in rows])
    at = np.array([r["at_size"] for r in rows])
    train = np.array([r["train_acc"] for r in rows])
    clean = [r for r in rows if not r["corruption"]]
    return {"models": len(rows), "reference_agreement_clean": float(np.mean([r["reference_agreement"] for r in clean]))
            if clean else None, "consistency": float(np.mean([r["vote_consistency"] for r in rows])),
            "at_size_mae": float(np.mean(np.abs(at - holdout))), "at_size_bias": float(np.mean(at - holdout)),
            "at_size_tau": kendall(at, holdout), "train_mae": float(np.mean(np.abs(train - holdout))),
            "train_tau": kendall(train, holdout)}


def main() -> int:
    found = measure()
    table = {label: {k: summary(rows) for k, rows in by_k.items()} for label, by_k in found.items()}
    (OUT / "centroids.json").write_text(json.dumps({"summary": table, "models": found}, indent=1))
    lines = ["# The patch vote with more k-means centroids (CIFAR-10; explored, nothing fitted)", "",
             "Generated by `python zoo/explore_centroids.py` (module docstring). The patch vote carried to the "
             "training set's size, read as the estimate of held-out accuracy; the labels' agreement with the vote on "
             "the clean-label runs (none among the fresh runs).", "",
             "| set | centroids | models | labels' agreement (clean runs) | vote consistency | vote at N: MAE | bias | "
             "τ | training accuracy: MAE | τ |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, by_k in table.items():
        for k, s in by_k.items():
            ref = "–" if s["reference_agreement_clean"] is None else f"{s['reference_agreement_clean']:.3f}"
            lines.append(f"| {label} | {k} | {s['models']} | {ref} | {s['consistency']:.3f} | "
                         f"{s['at_size_mae']:.3f} | {s['at_size_bias']:+.3f} | {s['at_size_tau']:.3f} | "
                         f"{s['train_mae']:.3f} | {s['train_tau']:.3f} |")
    (OUT / "centroids.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
