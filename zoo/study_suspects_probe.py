#!/usr/bin/env python
"""Explored, not adopted: does a cross-validated linear probe on the model's own layers add to the shipped
single-model suspicion on CIFAR-10 (docs/suspects.md)?

The probe is a multinomial logistic regression on the standardized features (or early-layer vectors) of the audited
samples, fitted on four folds with their given labels and read on the fifth (stratified, seeded): each sample's
doubt is 1 - the out-of-fold probability of its given label, so the probe never sees a sample's label when it judges
it. Each CIFAR-10 run's last checkpoint (zoo/study_suspects_views.py's runs: the real-use zoo's and both fresh
sets, every one already seen by the suspects study) is audited as `genaudit suspects` audits it; AUROC for "the
label is wrong" of the shipped suspicion (G: with the shifted doubt, the judges being weak on all of them), the
probe alone at three regularizations, and their mean. Needs scikit-learn (as zoo/study_suspects.py's cleanlab
reference).

    python zoo/study_suspects_probe.py   # prints one JSON line per model, then the means per set (5 minutes)
"""

from __future__ import annotations

import json
import os
import sys
from multiprocessing import Pool
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "zoo"))

import numpy as np  # noqa: E402

import study_suspects_views as V  # noqa: E402

STRENGTHS = (0.01, 0.1, 1.0)  # the logistic regression's C (smaller: more regularized)


def probe_doubt(x: np.ndarray, y: np.ndarray, strength: float, folds: int = 5, seed: int = 0) -> np.ndarray:
    """1 - each sample's out-of-fold probability of its given label under a linear probe on `x`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    out = np.zeros(len(y))
    for fit, judged in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        scale = StandardScaler().fit(x[fit])
        probe = LogisticRegression(C=strength, max_iter=300).fit(scale.transform(x[fit]), y[fit])
        p = probe.predict_proba(scale.transform(x[judged]))
        column = {c: i for i, c in enumerate(probe.classes_)}
        out[judged] = 1 - np.array([p[i, column[c]] if c in column else 0.0 for i, c in enumerate(y[judged])])
    return out


def one(job: tuple) -> dict:
    """AUROC of the shipped suspicion, the probes and their means for one model."""
    from genaudit.diagnostics.memorization import with_shifts
    from genaudit.diagnostics.neighbours import voter_rows, voters
    from genaudit.suspects import shifted_doubt

    group, corruption, model, npz, truth = job
    dataset, done, context, s, _ = V.audited(model, npz)
    shipped = with_shifts(s, shifted_doubt(done, dataset, context.opts.batch_size))
    y, wrong = done.fs.labels, V.truth_of(truth, dataset.ids)
    row = {"group": group, "corruption": corruption, "model": Path(model).name, "G": V.auroc(shipped, wrong)}
    features = np.asarray(done.fs.features, float).reshape(len(y), -1)
    for strength in STRENGTHS:
        doubt = probe_doubt(features, y, strength)
        row[f"probe C={strength}"] = V.auroc(doubt, wrong)
        row[f"mean with G, C={strength}"] = V.auroc((shipped + doubt) / 2, wrong)
    if context.spaces.get("early") is not None:
        doubt = probe_doubt(voter_rows(context, "early", voters(context, every=True)), y, STRENGTHS[0])
        row["early probe"], row["mean with G, early"] = V.auroc(doubt, wrong), V.auroc((shipped + doubt) / 2, wrong)
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    jobs = [(r["group"], r["corruption"], r["models"][-1], r["npz"], r["truth"]) for r in V.run_jobs()
            if r["group"].startswith("cifar10")]
    with Pool(2) as pool:
        rows = pool.map(one, jobs)
    names = [k for k in rows[0] if k not in ("group", "corruption", "model")]
    for group in sorted({r["group"] for r in rows}):
        chosen = [r for r in rows if r["group"] == group]
        print(group, len(chosen), {k: round(float(np.mean([r[k] for r in chosen if k in r])), 3) for k in names})
    return 0


if __name__ == "__main__":
    sys.exit(main())
