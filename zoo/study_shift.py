#!/usr/bin/env python
"""Explored, not shipped: does the whole model's accuracy on shifted training images tell the generalization gap
(and wrong labels) where pixel neighbours cannot, on natural images?

    python zoo/study_shift.py      # -> zoo/validity/shift.md (about 3 minutes; reruns each model on 500 images)

For each model of the real-use zoo and every 2nd/4th of the two small-data zoos: its accuracy against the given
labels on 500 of its training images (seeded) shifted diagonally by p = 1..4 pixels (both directions, edge pixels
repeated), read (a) as the estimate itself and (b) as `training accuracy - shifted accuracy` against the true gap.
And for the CIFAR-10 runs with wrong labels: the AUROC for "this label is wrong" of 1 - the model's probability of
the given label, clean and averaged over a horizontal flip and two 2-pixel shifts (the shipped suspicion: 0.81 /
0.76 / 0.67 at 20 / 40 / 60%, zoo/suspects/cifar10.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_suspects_cifar import auroc  # noqa: E402
from study_validity import OUT, kendall, load_records  # noqa: E402

GROUPS = (("realuse", "cifar10", 1), ("realuse", "mnist", 2), ("realuse", "fashion-mnist", 2), ("noise", "mnist", 4),
          ("noise", "fashion-mnist", 4), ("sweep", "mnist", 4), ("sweep", "fashion-mnist", 4))


def session(path: str):
    import onnxruntime as ort

    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    spec = s.get_inputs()[0]
    flat = len(spec.shape) == 2
    return lambda x: s.run(None, {spec.name: x.reshape(len(x), -1) if flat else x})[0].astype(np.float64)


def shifted(x: np.ndarray, p: int) -> list[np.ndarray]:
    from scipy import ndimage

    return [ndimage.shift(x, (0, 0, d, d), order=0, mode="nearest") for d in (p, -p)]


def given_probability(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[np.arange(len(y)), y]


def estimate_rows() -> list[str]:
    lines = ["| group | models | train acc τ / MAE | shift p | shifted acc τ / MAE | corr(train - shifted, gap) |",
             "|---|---:|---:|---:|---:|---:|"]
    for zoo, dataset, every in GROUPS:
        records = [r for r in load_records((zoo,)) if r["dataset"] == dataset][::every]
        rng, data, rows = np.random.default_rng(0), {}, []
        for r in records:
            if r["npz"] not in data:
                z = np.load(r["npz"])
                idx = np.sort(rng.choice(len(z["y"]), 500, replace=False))
                x = z["x"][idx].astype(np.float32) / 255
                x = x[:, None] if x.ndim == 3 else x
                data[r["npz"]] = (z["y"][idx], {p: shifted(x, p) for p in (1, 2, 3, 4)})
            y, shifts = data[r["npz"]]
            run = session(r["file"])
            rows.append((r["holdout"], r["card"]["clean_accuracy"],
                         {p: float(np.mean([(run(a).argmax(1) == y).mean() for a in v])) for p, v in shifts.items()}))
        h, t = np.array([a for a, _, _ in rows]), np.array([b for _, b, _ in rows])
        for p in (1, 2, 3, 4):
            s = np.array([c[p] for _, _, c in rows])
            lines.append(f"| {zoo} {dataset} | {len(rows)} | {kendall(t, h):.3f} / {np.mean(abs(t - h)):.3f} | {p} | "
                         f"{kendall(s, h):.3f} / {np.mean(abs(s - h)):.3f} | {np.corrcoef(t - s, t - h)[0, 1]:.3f} |")
        print(lines[-1], flush=True)
    return lines


def suspects_rows() -> list[str]:
    from scipy import ndimage

    zoo = Path(__file__).resolve().parent / "realuse"
    rng, data, found = np.random.default_rng(0), {}, {}
    for e in json.loads((zoo / "manifest.json").read_text()):
        if e["dataset"] != "cifar10" or not e.get("corruption"):
            continue
        if e["train_npz"] not in data:
            z = np.load(zoo / e["train_npz"])
            idx = np.sort(rng.choice(len(z["y"]), 2000, replace=False))
            x = z["x"][idx].astype(np.float32) / 255
            augs = [x[..., ::-1].copy()] + [ndimage.shift(x, (0, 0, d, d), order=0, mode="nearest") for d in (2, -2)]
            data[e["train_npz"]] = (x, z["y"][idx], z["y"][idx] != z["y_true"][idx], augs)
        x, y, wrong, augs = data[e["train_npz"]]
        run = session(str(zoo / e["file"]))
        clean = given_probability(run(x), y)
        augmented = np.mean([given_probability(run(a), y) for a in augs], axis=0)
        found.setdefault(e["corruption"], []).append((auroc(1 - clean, wrong), auroc(1 - augmented, wrong)))
    lines = ["| wrong labels | models | 1 - p(given), clean | 1 - p(given), flip + shifts |", "|---:|---:|---:|---:|"]
    for c, v in sorted(found.items()):
        a = np.array(v)
        lines.append(f"| {c}% | {len(a)} | {a[:, 0].mean():.3f} | {a[:, 1].mean():.3f} |")
    return lines


def main() -> int:
    lines = ["# Shifted training images: explored, not shipped", "", "Generated by `python zoo/study_shift.py`.", "",
             "## As the estimate or the gap", ""] + estimate_rows() + ["", "## Wrong labels on CIFAR-10", ""]
    lines += suspects_rows()
    (OUT / "shift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
