#!/usr/bin/env python
"""Is there a space built from the training images alone in which the neighbour vote is a
better reference than pixels, above all on natural images? On CIFAR-10 the pixel vote is little better than chance
at telling a label (two disjoint votes agree on 17-45% of samples), so the estimate has little to read there.

    python zoo/study_spaces.py      # -> zoo/validity/spaces.md and .json (about a minute)

For each data set of the real-use zoo (zoo/build_realuse.py: 95 CIFAR-10 models, 152 MNIST and 152 Fashion-MNIST
full-data checkpoints), its models share one set of 4,000 training images (their labels differ by the share
corrupted). On one seeded subsample of 2,000 of them, each space's 20 nearest neighbours are found once
(`genaudit.diagnostics.neighbours`, leave-one-out, Euclidean); then, for each label set, the vote's quality as a
reference (its accuracy on the *true* labels, which genaudit never sees; the labels' agreement with it; two
disjoint votes' consistency), and for each model its agreement with the vote of the labels it was trained on,
ranked against its held-out accuracy (Kendall τ), as genaudit's `neighbours.<space>.value`. The spaces, each
built from the 2,000 images only (no model, no label), with settings fixed before the first run:

- pixels: x / 255, the audit's input space;
- whitened: each image centred and scaled to unit norm, projected on its top 100 principal components, each
  scaled by 1 / sqrt(eigenvalue + 0.1 x their mean eigenvalue) (a first version, ZCA on every component with
  eigenvalues floored at 1% of their mean, made every image equidistant: vote accuracy 0.10 on CIFAR-10);
- patches: Coates & Ng (2011) single-layer features: 6x6 patches, each normalized, whitened (ZCA, eps 0.1), 128
  centroids by 10 rounds of k-means on 100,000 of them, the triangle activation max(0, mean_k d - d_k) averaged
  over the image's four quadrants (512 values): genaudit's patch space since 0.5.0 (`genaudit.patches`, float32;
  this study first ran it in float64 and numpy's loops, and a cheaper configuration with patches every 2 pixels,
  k-means on 20,000 of them: both at commit 812609a, spaces_fast.md).

Nothing here is fitted on held-out accuracy; the zoo's held-out accuracy and true labels are read only to score.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genaudit.data import stratified_indices  # noqa: E402
from genaudit.diagnostics.neighbours import K, nearest_neighbours, neighbour_agreement, vote_of  # noqa: E402
from genaudit.patches import patch_space  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_validity import kendall  # noqa: E402

ZOO = ROOT / "zoo" / "realuse"
OUT = ROOT / "zoo" / "validity"
SAMPLES, SEED = 2000, 0


def whitened(x: np.ndarray, components: int = 100) -> np.ndarray:
    """Images centred and scaled to unit norm, projected on their top principal components, each scaled by
    1 / sqrt(eigenvalue + 0.1 x the components' mean eigenvalue)."""
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-8
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    eig = s[:components] ** 2 / len(x)
    return centred @ vt[:components].T / np.sqrt(eig + 0.1 * eig.mean())


def predictions(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])


DATASETS = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def study(dataset: str) -> dict:
    """The spaces' votes as references and each model's agreement, for the real-use zoo's models of `dataset`."""
    entries = [e for e in json.loads((ZOO / "manifest.json").read_text()) if e["dataset"] == dataset]
    labels = {c: np.load(ZOO / f"{dataset}_train_c{c:02d}.npz") for c in sorted({e["corruption"] for e in entries})}
    first = labels[0]
    chosen = stratified_indices(len(first["y"]), None, SAMPLES, SEED)
    images = first["x"][chosen].astype(np.float32) / 255
    truth = first["y_true"][chosen]
    start = time.perf_counter()
    spaces = {"pixels": images.reshape(len(images), -1).astype(np.float64),
              "whitened": whitened(images.reshape(len(images), -1).astype(np.float64)),
              "patches": patch_space(images)}
    built = time.perf_counter() - start
    found = {name: nearest_neighbours(x, 2 * K) for name, x in spaces.items()}
    reference = {}
    for c, z in labels.items():
        given = z["y"][chosen]
        for name, (idx, dist) in found.items():
            vote = vote_of(idx[:, :K], dist[:, :K], given)
            stats = neighbour_agreement(None, given, given, K, neighbours=(idx, dist))
            reference[f"{name} c{c}"] = {"vote_accuracy_true_labels": float(np.mean(vote == truth)),
                                         "labels_agreement": stats["reference_agreement"],
                                         "vote_consistency": stats["vote_consistency"]}
    models = []
    for e in entries:
        pred = predictions(ZOO / e["file"], images)
        given = labels[e["corruption"]]["y"][chosen]
        row = {"file": e["file"], "corruption": e["corruption"], "holdout": e["holdout_accuracy"],
               "train_acc": float(np.mean(pred == given))}
        for name, (idx, dist) in found.items():
            row[name] = neighbour_agreement(None, given, pred, K, neighbours=(idx, dist))["value"]
        models.append(row)
    y = np.array([m["holdout"] for m in models])
    signals = ["train_acc", *spaces]
    ranking = {name: {"tau": kendall(np.array([m[name] for m in models]), y),
                      "mae_read_as_accuracy": float(np.mean(np.abs(np.array([m[name] for m in models]) - y)))}
               for name in signals}
    by_noise = {name: {c: kendall(np.array([m[name] for m in models if m["corruption"] == c]),
                                  np.array([m["holdout"] for m in models if m["corruption"] == c]))
                       for c in labels} for name in signals}
    return {"reference": reference, "ranking": ranking, "by_noise": by_noise, "models": models,
            "seconds_to_build_spaces": built, "corruptions": list(labels), "spaces": list(spaces)}


def main() -> int:
    results = {dataset: study(dataset) for dataset in DATASETS}
    OUT.mkdir(exist_ok=True)
    (OUT / "spaces.json").write_text(json.dumps(results, indent=1))
    lines = ["# Neighbour votes in spaces built from the training images alone (the patch space ships since genaudit 0.5.0)", "",
             "Generated by `python zoo/study_spaces.py`: 2,000 of the 4,000 training images the real-use zoo's "
             "models of each data set share (module docstring)."]
    for dataset, r in results.items():
        cs = r["corruptions"]
        lines += ["", f"## {DATASETS[dataset]} ({len(r['models'])} models; the spaces took "
                  f"{r['seconds_to_build_spaces']:.0f} s to build)", "",
                  "The vote as a reference, per share of wrong labels: its accuracy on the true labels / the given "
                  "labels' agreement with it / two disjoint votes' consistency:", "",
                  "| space | " + " | ".join(f"{c}%" for c in cs) + " |", "|---|" + "---|" * len(cs)]
        for name in r["spaces"]:
            cells = [r["reference"][f"{name} c{c}"] for c in cs]
            lines.append(f"| {name} | " + " | ".join(
                f"{x['vote_accuracy_true_labels']:.3f} / {x['labels_agreement']:.3f} / {x['vote_consistency']:.3f}"
                for x in cells) + " |")
        lines += ["", "Each model's agreement with the vote of its own training labels against its held-out "
                  "accuracy (training accuracy on the same images beside them):", "",
                  "| signal | τ, all models | MAE read as the accuracy | τ at " + " / ".join(f"{c}" for c in cs)
                  + "% |", "|---|---:|---:|---|"]
        for name in ["train_acc", *r["spaces"]]:
            x = r["ranking"][name]
            lines.append(f"| {name} | {x['tau']:.3f} | {x['mae_read_as_accuracy']:.3f} | "
                         + " / ".join(f"{r['by_noise'][name][c]:.2f}" for c in cs) + " |")
    (OUT / "spaces.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
