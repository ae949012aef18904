#!/usr/bin/env python
"""The interval where pixel neighbours are no reliable reference (exploration). There the shipped interval is at
least a constant floor: the 90% quantile of the absolute errors of every such calibration model (±0.197 in the
published estimator). On the 85 fresh CIFAR-10 checkpoints (zoo/validity/fresh_estimate.md) it covers every model at
±0.25 for a mean error of 0.028: the floor is set by the largest errors among those models, MNIST-like runs with
60-100% wrong labels, whose gaps are large. Their errors grow with the predicted gap like everyone else's, so the
alternative here treats them like everyone else, with a quantile of their own:

- "floor" (shipped): unreliable models get max(q · (0.03 + |gap|) + widening, the absolute floor);
- "normalized": unreliable models get q_u · (0.03 + |gap|) + widening, q_u the 90% conformal quantile of the
  normalized residuals of the unreliable calibration models alone (each (zoo, data set) of the fitting data
  predicted by a fit on the others, as shipped).

Reliable models keep the shipped interval in both. Each split's form and loss are those zoo/study_estimate.py
chose (zoo/validity/estimate_v4.json), so the estimates are the shipped evaluation's.

The rule, fixed before the first run: "normalized" would be adopted only if (1) in every split, every held-out group
with at least 10 unreliable models covers them at 0.85 or more (or, where "floor" covers them below 0.85, at least as
well as "floor"), (2) the published fit's version covers the fresh CIFAR-10 checkpoints at 0.85 or more, and (3) the
mean width over all held-out unreliable models, pooled over the splits, is smaller than "floor"'s.

    python zoo/study_floor.py      # -> zoo/validity/floor.md and .json (seconds; needs study_fresh_estimate's cache)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_estimate as S  # noqa: E402
import study_fresh_estimate as F  # noqa: E402
from study_validity import OUT, conformal_quantile  # noqa: E402

MIN_GROUP = 10  # unreliable held-out models a group needs to count in the rule
TARGET = 0.85


def unreliable_quantile(train: list[dict], form: str, loss: str) -> float:
    """q_u: the 90% quantile of |error| / (0.03 + |gap|) over the unreliable models of `train`, each (zoo, data set)
    predicted by a fit on the others."""
    res = []
    for held, p, gap in S.group_out(train, form, loss):
        err = np.abs(p - np.array([r["holdout"] for r in held]))
        res.extend((err / S.scale(gap))[[S.unreliable(r) for r in held]])
    return conformal_quantile(res)


def halves(model: dict, q_u: float, records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(|error|, unreliable mask, floor half-widths, normalized half-widths) of `records` under `model`."""
    p, gap, widen = S.predict(model, records)
    err = np.abs(p - np.array([r["holdout"] for r in records]))
    low = np.array([S.unreliable(r) for r in records])
    shipped = S.half_width(model, records, gap, widen)
    normalized = np.where(low, q_u * S.scale(gap) + widen, shipped)
    return err, low, shipped, normalized


def cell(err, half, idx) -> dict:
    return {"models": int(len(idx)), "coverage": float(np.mean(err[idx] <= half[idx])) if len(idx) else None,
            "width": float(np.mean(2 * half[idx])) if len(idx) else None}


def main() -> int:
    forms = json.loads((OUT / "estimate_v4.json").read_text())
    records = S.study_records()
    results, pooled = {}, {"floor": [], "normalized": []}
    for split, (train, test) in S.splits(records).items():
        form, loss = forms[split]["form"], forms[split]["loss"]
        model = S.calibrate(train, form, loss)
        q_u = unreliable_quantile(train, form, loss)
        err, low, floor, normalized = halves(model, q_u, test)
        pooled["floor"].extend(2 * floor[low])
        pooled["normalized"].extend(2 * normalized[low])
        rows = {}
        for group in sorted({S.group_of(r) for r in test}.union(*(S.subgroups(r) for r in test))) + ["all"]:
            idx = np.array([i for i, r in enumerate(test) if low[i] and (group in ("all", S.group_of(r))
                                                                         or group in S.subgroups(r))], int)
            if len(idx):
                rows[group] = {"floor": cell(err, floor, idx), "normalized": cell(err, normalized, idx)}
        results[split] = {"form": form, "q": model["conformal"]["quantile_90"], "q_u": q_u,
                          "floor": model["conformal"]["abs_unreliable"], "groups": rows}

    published = S.calibrate(records, *S.choose(records)[:2])
    q_u = unreliable_quantile(records, published["form"], published["loss"])
    fresh = F.records()
    err, low, floor, normalized = halves(published, q_u, fresh)
    all_fresh = np.arange(len(fresh))
    fresh_rows = {"floor": cell(err, floor, all_fresh), "normalized": cell(err, normalized, all_fresh),
                  "unreliable": int(low.sum()), "q_u": q_u}

    checks = []
    for split, res in results.items():
        for group, row in res["groups"].items():
            if group == "all" or row["floor"]["models"] < MIN_GROUP:
                continue
            a, b = row["floor"]["coverage"], row["normalized"]["coverage"]
            checks.append(b >= TARGET or b >= a)
    adopted = (all(checks) and fresh_rows["normalized"]["coverage"] >= TARGET
               and np.mean(pooled["normalized"]) < np.mean(pooled["floor"]))
    (OUT / "floor.json").write_text(json.dumps({"splits": results, "fresh": fresh_rows, "adopted": bool(adopted),
                                                "pooled_width": {k: float(np.mean(v)) for k, v in pooled.items()}},
                                               indent=1))
    lines = ["# The interval where pixel neighbours are no reliable reference (exploration)", "",
             "Generated by `python zoo/study_floor.py` (module docstring: the two intervals and the rule, fixed before "
             "the first run). Only unreliable models (pixel vote consistency below 0.5) are counted; each cell: 90% "
             "coverage / mean width, floor → normalized.", "",
             f"**Rule: {'adopted' if adopted else 'not adopted'}.** Pooled mean width over the held-out unreliable "
             f"models: {np.mean(pooled['floor']):.3f} → {np.mean(pooled['normalized']):.3f}. Fresh CIFAR-10 "
             f"checkpoints ({fresh_rows['unreliable']} of {len(fresh)} unreliable; q_u {q_u:.2f}): "
             f"{fresh_rows['floor']['coverage']:.2f} / {fresh_rows['floor']['width']:.3f} → "
             f"{fresh_rows['normalized']['coverage']:.2f} / {fresh_rows['normalized']['width']:.3f}.", "",
             "| split | q / q_u / floor | group | unreliable models | floor | normalized |",
             "|---|---|---|---:|---:|---:|"]
    for split, res in results.items():
        for group, row in res["groups"].items():
            f, n = row["floor"], row["normalized"]
            lines.append(f"| {split} | {res['q']:.2f} / {res['q_u']:.2f} / {res['floor'] or 0:.3f} | {group} | "
                         f"{f['models']} | {f['coverage']:.2f} / {f['width']:.3f} | {n['coverage']:.2f} / "
                         f"{n['width']:.3f} |")
    (OUT / "floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
