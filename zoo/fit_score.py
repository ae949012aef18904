"""Fit genaudit's generalization score on a validation study and evaluate it on a data set it was not fitted on.

    genaudit validate 'zoo/models/mnist_*.onnx' --data zoo/models/mnist_train.npz \
        --holdout zoo/models/mnist_holdout.npz --no-labels --runs zoo/models/manifest.json --json zoo/study_mnist.json
    (the same for fashion-mnist)
    python zoo/fit_score.py zoo/study_mnist.json zoo/study_fashion-mnist.json --manifest zoo/models/manifest.json \
        --write genaudit/score_model.json --report docs/validation_score.md

The first study is the fitting set, the second the evaluation set. Components are chosen by greedy forward
selection on the fitting set (a component is kept only if it raises the fitting set's Kendall tau by >= 0.005),
weights are constrained >= 0 on oriented components so the score is monotone in each.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from genaudit.score import oriented  # noqa: E402

# name -> (scorecard path, sign so that higher = better, transform)
CANDIDATES = {
    "ablation": ("ablation.auc", 1, "none"),
    "noise": ("noise.auc", 1, "none"),
    "steadiness": ("steadiness.ratio", -1, "none"),
    "consistency": ("consistency.value", -1, "log"),
    "nodes": ("nodes.accuracy", 1, "none"),
    "mi_selectivity": ("selectivity.mutual_information.mean", 1, "none"),
    "selectivity": ("selectivity.mean", 1, "none"),
    "magnitude": ("magnitude.value", -1, "log"),
}


def load(path: Path) -> list[dict]:
    study = json.loads(path.read_text())
    return study["models"]


def matrix(models: list[dict], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rows, truth, kept = [], [], []
    for m in models:
        values = [m["metrics"].get(n) for n in names]
        if any(v is None for v in values):
            continue
        rows.append([oriented(v, CANDIDATES[n][1], CANDIDATES[n][2]) for v, n in zip(values, names)])
        truth.append(m["holdout_accuracy"])
        kept.append(m)
    return np.array(rows), np.array(truth), kept


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Least squares of sigmoid(b + x @ w) against accuracy, w >= 0 (features standardized for the solver)."""
    mu, sd = x.mean(0), x.std(0) + 1e-12
    xs = (x - mu) / sd

    def loss(p):
        pred = 1 / (1 + np.exp(-(p[0] + xs @ p[1:])))
        return np.mean((pred - y) ** 2)

    p0 = np.zeros(x.shape[1] + 1)
    res = minimize(loss, p0, method="L-BFGS-B", bounds=[(None, None)] + [(0, None)] * x.shape[1])
    w = res.x[1:] / sd
    return float(res.x[0] - (res.x[1:] * mu / sd).sum()), w


def predict(x: np.ndarray, b: float, w: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(b + x @ w)))


def tau(a, b) -> float:
    return float(kendalltau(a, b)[0])


def select(models: list[dict]) -> list[str]:
    chosen, best = [], -1.0
    while True:
        trials = {}
        for name in CANDIDATES:
            if name in chosen:
                continue
            x, y, _ = matrix(models, chosen + [name])
            b, w = fit(x, y)
            trials[name] = tau(predict(x, b, w), y)
        if not trials:
            return chosen
        name, value = max(trials.items(), key=lambda kv: kv[1])
        if value < best + 0.005:
            return chosen
        chosen.append(name)
        best = value


def evaluate(models: list[dict], names: list[str], b: float, w: np.ndarray, manifest: dict) -> dict:
    x, y, kept = matrix(models, names)
    score = predict(x, b, w)
    out = {"kendall": tau(score, y), "spearman": float(spearmanr(score, y)[0]), "models": len(kept)}
    groups = defaultdict(list)
    for s, acc, m in zip(score, y, kept):
        info = manifest.get(Path(m["model"]).name, {})
        groups[("regularizer", info.get("regularizer", "?"))].append((s, acc))
        groups[("arch", info.get("arch", "?"))].append((s, acc))
    out["by_group"] = {f"{k}={v}": {"kendall": tau(*zip(*pairs)) if len(pairs) > 2 else None, "models": len(pairs)}
                       for (k, v), pairs in sorted(groups.items())}
    runs = defaultdict(list)
    for s, acc, m in zip(score, y, kept):
        runs[m["run"]].append((s, acc))
    gaps = [max(a for _, a in pairs) - max(pairs)[1] for pairs in runs.values()]
    out["runs"] = len(gaps)
    out["best_checkpoint_gap_mean"] = float(np.mean(gaps))
    out["best_checkpoint_within_2_points"] = float(np.mean([g <= 0.02 for g in gaps]))
    per_metric = {}
    for name in CANDIDATES:
        xx, yy, _ = matrix(models, [name])
        per_metric[name] = tau(xx[:, 0], yy)
    out["single_metric_oriented_kendall"] = per_metric
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fit_study", type=Path)
    p.add_argument("eval_study", type=Path)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--write", type=Path)
    p.add_argument("--report", type=Path)
    args = p.parse_args()
    manifest = {e["file"]: e for e in json.loads(args.manifest.read_text())}
    fit_models, eval_models = load(args.fit_study), load(args.eval_study)
    names = select(fit_models)
    x, y, _ = matrix(fit_models, names)
    b, w = fit(x, y)
    result = {
        "fitted_on": {"study": args.fit_study.name, **evaluate(fit_models, names, b, w, manifest)},
        "evaluation": {"study": args.eval_study.name, **evaluate(eval_models, names, b, w, manifest)},
    }
    spec = {
        "version": f"zoo-fit-{args.fit_study.stem}",
        "features": {n: {"path": CANDIDATES[n][0], "sign": CANDIDATES[n][1], "transform": CANDIDATES[n][2]}
                     for n in names},
        "weights": {n: float(v) for n, v in zip(names, w)},
        "bias": b,
        "evaluation": {"data": args.eval_study.stem.replace("study_", ""),
                       "kendall": result["evaluation"]["kendall"]},
    }
    print(json.dumps({"spec": spec, **result}, indent=1))
    if args.write:
        args.write.write_text(json.dumps(spec, indent=1) + "\n")
    if args.report:
        args.report.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
