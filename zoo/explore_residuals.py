#!/usr/bin/env python
"""Explored, not shipped: what does the shipped form leave unexplained, and does any value the scorecard already
holds follow it?

Every signal added to the estimator so far was one of the neighbour votes or the margins. The scorecard also holds
the diagnostics genaudit computes anyway (ablation, noise robustness, steadiness, consistency, selectivity,
perplexity, nodes as classifiers, memorization) and the votes' label-free readings. This asks, with nothing fitted
beyond the shipped form: in each group of the three zoos, how strongly does each of those values rank with Z1's
error on that group when Z1 never saw it?

- Z1's errors: each (zoo, data set) predicted by Z1 fitted on the others (`study_estimate.group_out`, least
  squares, the published loss), so a value that follows the error is not one the fit already absorbed.
- Per group (`study_estimate.group_indices`) and value: Spearman's ρ between the value and the signed error
  (held-out accuracy minus the estimate: positive where Z1 is too pessimistic).
- A value is listed when it is present on every model. Its summary: over the five groups that are whole (zoo, data
  set) pairs, how many have |ρ| >= 0.3 in the direction of its median ρ, and how many the other way. A value that
  follows the error in one direction in all five would be a candidate for a later registered study, not for
  shipping from here.
- Whether the groups' biases are extrapolation: each whole group held out, Z1 fitted on the rest, its terms clamped
  to the range they span in the fitting data before the gap is predicted, beside Z1 as fitted.

    python zoo/explore_residuals.py      # -> zoo/validity/residuals.md and .json (about a minute, from the caches)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_estimate as S  # noqa: E402
from study_validity import OUT, flat  # noqa: E402

Z1 = "Z1: X1 in the patch space"
SKIP = ("clean_accuracy", "estimate.", "score.", ".samples", ".size")  # the fit's own inputs, outputs and counts
WHOLE = ("noise zoo", "sweep zoo", "realuse CIFAR-10", "realuse fashion-mnist (full data)", "realuse mnist (full data)")
MAIN = (*WHOLE, "realuse mnist (full data, clean labels)", "realuse fashion-mnist (full data, clean labels)")
STRONG = 0.3


def values(r: dict) -> dict[str, float]:
    """Every finite scalar of a record: its scorecard values and the study's own readings (prefixed `new.`)."""
    out = {**flat(r["card"]), **flat(r.get("new") or {}, "new.")}
    return {k: v for k, v in out.items() if math.isfinite(v) and not any(s in k for s in SKIP)}


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def measure() -> dict:
    records = S.study_records()
    err = np.full(len(records), np.nan)
    index = {id(r): i for i, r in enumerate(records)}
    for held, p, _ in S.group_out(records, Z1, S.SQUARES):
        for r, e in zip(held, p):
            err[index[id(r)]] = r["holdout"] - e
    table = [values(r) for r in records]
    names = sorted(set.intersection(*(set(t) for t in table)))
    groups = {g: idx for g, idx in S.group_indices(records).items() if g in MAIN}
    rho = {name: {g: spearman(np.array([table[i][name] for i in idx]), err[idx]) for g, idx in groups.items()}
           for name in names}
    return {"models": len(records), "groups": {g: {"models": len(idx), "mean_error": float(err[idx].mean()),
                                                   "mae": float(np.abs(err[idx]).mean())}
                                               for g, idx in groups.items()}, "rho": rho,
            "clamped": clamped(records)}


def clamped(records: list[dict]) -> dict:
    """Per whole group held out: Z1's MAE and mean error as fitted on the rest, the same with each term clamped to
    its fitted range, the share of models with a term outside it, and training accuracy's MAE."""
    out = {}
    for group in WHOLE:
        held = [r for r in records if S.group_of(r) == group]
        model = S.fit([r for r in records if S.group_of(r) != group], Z1, S.SQUARES)
        estimate, _, widen = S.predict(model, held)
        terms = list(model["coefficients"])
        lo, hi = (np.array([model["range"][t][j] for t in terms]) for j in (0, 1))
        train = np.array([S.read(r, "train_acc") for r in held])
        gap = model["intercept"] + np.clip(S.matrix(held, terms), lo, hi) @ np.array([model["coefficients"][t]
                                                                                      for t in terms])
        truth = np.array([r["holdout"] for r in held])
        out[group] = {"models": len(held), "mae": float(np.abs(estimate - truth).mean()),
                      "mean_error": float((truth - estimate).mean()),
                      "clamped_mae": float(np.abs(np.clip(train - gap, 0, 1) - truth).mean()),
                      "outside": float(np.mean(widen > 0)), "train_mae": float(np.abs(train - truth).mean())}
    return out


def agreement(by_group: dict[str, float | None]) -> tuple[int, int]:
    """(whole groups with |ρ| >= STRONG in the direction of the median ρ over them, those with it the other way)."""
    found = [by_group[g] for g in WHOLE if by_group[g] is not None]
    if not found:
        return 0, 0
    sign = np.sign(np.median(found))
    return (sum(abs(v) >= STRONG and np.sign(v) == sign for v in found),
            sum(abs(v) >= STRONG and np.sign(v) != sign for v in found))


def main() -> int:
    found = measure()
    (OUT / "residuals.json").write_text(json.dumps(found, indent=1))
    groups = list(found["groups"])
    order = sorted(found["rho"], key=lambda n: (-np.subtract(*agreement(found["rho"][n])), n))
    lines = ["# What Z1 leaves unexplained, and the scorecard values that follow it (explored, nothing fitted)", "",
             "Generated by `python zoo/explore_residuals.py` (module docstring). Z1's error on each group is that of "
             "Z1 fitted without the group's (zoo, data set); error = held-out accuracy − estimate (positive: too "
             "pessimistic). Spearman's ρ of each value with that error, per group. 'with / against': of the five whole "
             f"groups, how many have |ρ| ≥ {STRONG} in the direction of the value's median ρ over them, and how many "
             "the other way; ordered by their difference.", "",
             "| group | models | mean error | MAE |", "|---|---:|---:|---:|"]
    lines += [f"| {g} | {s['models']} | {s['mean_error']:+.3f} | {s['mae']:.3f} |" for g, s in found["groups"].items()]
    lines += ["", "Each whole group held out, Z1 fitted on the rest, with its terms as they are and clamped to their "
              "fitted range:", "", "| held out | models | terms outside the fitted range | Z1 MAE | mean error | "
              "clamped: MAE | training accuracy: MAE |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {g} | {c['models']} | {c['outside']:.0%} | {c['mae']:.3f} | {c['mean_error']:+.3f} | "
              f"{c['clamped_mae']:.3f} | {c['train_mae']:.3f} |" for g, c in found["clamped"].items()]
    lines += ["", "| value | with / against | " + " | ".join(groups) + " |", "|---|---:|" + "---:|" * len(groups)]
    for name in order:
        cells = ["–" if v is None else f"{v:+.2f}" for v in (found["rho"][name][g] for g in groups)]
        lines.append(f"| {name} | {'{} / {}'.format(*agreement(found['rho'][name]))} | " + " | ".join(cells) + " |")
    (OUT / "residuals.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:40]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
