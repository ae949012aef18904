"""Reproduce the papers' findings at small scale from validation studies + the zoo manifest (Markdown tables).

    python zoo/paper_tables.py zoo/study_mnist.json zoo/study_fashion-mnist.json --manifest zoo/models/manifest.json

- Morcos et al. 2018: ablation curves get steeper (lower ablation AUC) as label corruption grows.
- AL2: with the AL2 regularizer the ablation AUC of a memorizing network (high corruption) stays higher.
- NSR: intra-class variance grows during training, and is lower with NSR.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def rows(studies: list[Path], manifest: dict) -> list[dict]:
    out = []
    for path in studies:
        for m in json.loads(path.read_text())["models"]:
            info = manifest[Path(m["model"]).name]
            out.append({**info, **m["metrics"], "holdout": m["holdout_accuracy"]})
    return out


def table(data: list[dict], row_key: str, col_key: str, value: str, where=lambda r: True) -> str:
    cells = defaultdict(list)
    for r in data:
        if where(r) and r.get(value) is not None:
            cells[(r[row_key], r[col_key])].append(r[value])
    order = lambda v: (isinstance(v, str), v)  # noqa: E731  numbers in numeric order, then names
    rows_, cols = sorted({k[0] for k in cells}, key=order), sorted({k[1] for k in cells}, key=order)
    lines = [f"| {row_key} \\ {col_key} | " + " | ".join(map(str, cols)) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows_:
        lines.append(f"| {r} | " + " | ".join(f"{np.mean(cells[(r, c)]):.3f}" if cells.get((r, c)) else "—"
                                              for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("studies", type=Path, nargs="+")
    p.add_argument("--manifest", type=Path, required=True)
    args = p.parse_args()
    manifest = {e["file"]: e for e in json.loads(args.manifest.read_text())}
    data = rows(args.studies, manifest)
    last = max(r["epoch"] for r in data)
    final = lambda r: r["epoch"] == last  # noqa: E731
    print("### Morcos: ablation AUC by label corruption (final checkpoints, mean over runs)\n")
    print(table(data, "dataset", "corruption", "ablation", where=final))
    print("\nHoldout accuracy of the same models:\n")
    print(table(data, "dataset", "corruption", "holdout", where=final))
    print("\n### AL2: ablation AUC by regularizer and corruption (final checkpoints)\n")
    print(table(data, "regularizer", "corruption", "ablation", where=final))
    print("\n### NSR: intra-class variance ratio across training (no regularizer vs NSR, all corruption levels)\n")
    print(table(data, "regularizer", "epoch", "steadiness", where=lambda r: r["regularizer"] in ("none", "nsr")))


if __name__ == "__main__":
    main()
