"""Expected held-out accuracy, with a 90% interval, from the audit's own numbers on training data.

estimate = clip(intercept + Σ_k c_k x_k, 0, 1), where x_k are scorecard values (neighbour agreement in input and
feature space, training accuracy, ...) and the coefficients come from genaudit's validation study
(zoo/study_validity.py, docs/validity.md): fitted on model zoos with known held-out accuracy, evaluated on data
sets and architecture families the fit never saw. The interval is split-conformal: ± the 90% quantile of the
absolute residuals on calibration runs the fit did not use, widened by |c_k| times how far each x_k lies outside
the range the zoo covered (a model unlike the zoo gets a wider interval, and `basis` says why).

Audits with labels use the labelled estimator; without labels there is none yet (the label-free neighbour votes
ranked models poorly in the study), and `basis` says so.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from genaudit.features import share_error
from genaudit.registry import Metric
from genaudit.scorecard import lookup

MODEL = Path(__file__).resolve().parent / "estimate_model.json"

METRIC = Metric("estimate", "estimate.accuracy", "expected held-out accuracy", "estimate", "higher",
                "accuracy expected on unseen data",
                "expected accuracy on held-out data from the training data's distribution (90% interval in "
                "estimate.interval)",
                "clip(b + Σ_k c_k x_k, 0, 1), x_k scorecard values; interval ± conformal q90 (+ out-of-range "
                "widening)",
                "genaudit validity study (docs/validity.md); neighbour vote after the PGDL/Jiang et al. line of "
                "work on predicting generalization from training data",
                "An estimate, not a measurement: read it with its interval and `estimate.basis`. Checked on "
                "zoos of small MNIST/Fashion-MNIST models; on very different data or models the interval says "
                "less than it claims.", tag="est. acc", error="estimate.standard_error")


@lru_cache(maxsize=1)
def model() -> dict:
    return json.loads(MODEL.read_text(encoding="utf-8"))


def _predictor(label_mode: str) -> tuple[dict | None, str]:
    """The fitted predictor for this label mode and its name."""
    spec = model()
    if label_mode == "labels":
        return spec, "with labels"
    return spec.get("label_free"), "label-free (the model's own predictions as reference)"


def inputs(card: dict, predictor: dict) -> dict[str, float] | None:
    """The predictor's inputs read from a scorecard (None when one is missing)."""
    values = {}
    for name, feature in predictor["features"].items():
        paths = feature["path"] if isinstance(feature["path"], list) else [feature["path"]]
        found = [lookup(card, path) for path in paths]
        if any(v is None for v in found):
            return None
        values[name] = math.prod(found)  # one path: its value; several: their product (an interaction)
    return values


def _share_error(card: dict, path: str) -> float:
    """The sampling standard error sqrt(p (1 - p) / n) of an input that is a share: clean accuracy (n = every
    audited sample) or a neighbour-vote share (n = that vote's voters, its block's `samples`: at most 2,000
    whatever the audit's size); 0 for inputs that are not shares (e.g. consistency)."""
    if path == "clean_accuracy":
        n = card.get("samples")
    elif path.startswith("diagnostics.neighbours."):
        n = lookup(card, path.rsplit(".", 1)[0] + ".samples")
    else:
        return 0.0
    return share_error(lookup(card, path), max(int(n or 0), 1)) or 0.0


def standard_error(card: dict, predictor: dict) -> float:
    """Sampling standard error of the estimate from the shares it reads (delta method; products of inputs are
    differentiated; inputs that are not shares, e.g. consistency, count as exact)."""
    total = 0.0
    for name, feature in predictor["features"].items():
        paths = feature["path"] if isinstance(feature["path"], list) else [feature["path"]]
        values = [lookup(card, path) for path in paths]
        for i, path in enumerate(paths):
            gradient = predictor["coefficients"][name] * math.prod(v for j, v in enumerate(values) if j != i)
            total += (gradient * _share_error(card, path)) ** 2
    return math.sqrt(total)


def estimate(card: dict) -> dict:
    """The scorecard's `estimate` block: accuracy, interval [lo, hi] (90%), basis (what it rests on)."""
    predictor, which = _predictor(card.get("label_mode", "labels"))
    if predictor is None:
        return {"accuracy": None, "interval": None, "level": 0.9, "standard_error": None,
                "basis": "no estimate without labels: label-free neighbour votes ranked held-out accuracy poorly in "
                         "genaudit's validity study (Kendall τ 0.31–0.40, docs/validity.md); audit with the "
                         "training labels for an estimate"}
    x = inputs(card, predictor)
    if x is None:
        return {"accuracy": None, "interval": None, "level": 0.9, "standard_error": None,
                "basis": "undefined: a diagnostic the estimate reads is missing from this audit"}
    coefficients = predictor["coefficients"]
    value = predictor["intercept"] + sum(coefficients[k] * x[k] for k in x)
    half = predictor["conformal"]["quantile_90"]
    outside = []
    for name, (lo, hi) in predictor["range"].items():
        excess = max(lo - x[name], x[name] - hi, 0.0)
        if excess > 0:
            half += abs(coefficients[name]) * excess
            outside.append(f"{name} = {x[name]:.3f} outside the zoo's [{lo:.3f}, {hi:.3f}]")
    accuracy = min(max(value, 0.0), 1.0)
    fitted = model()["fitted_on"]
    basis = (f"{which}; linear in {', '.join(predictor['features'])}, fitted on {fitted['models']} zoo models "
             f"({', '.join(fitted['datasets'])}; {', '.join(fitted['archs'])}); 90% split-conformal interval "
             f"±{predictor['conformal']['quantile_90']:.3f}")
    if outside:
        basis += "; widened because " + "; ".join(outside)
    if not card.get("layer", {}).get("default", True):
        basis += ("; fitted on audits of the default feature layer, and this one audits another (--layer): the "
                  "feature-space vote means something else here")
    samples = card.get("samples", 0)
    needed = model().get("requires", {}).get("samples", 0)
    if samples < needed:
        basis += (f"; fitted on audits of {needed} samples and this one has {samples}: neighbour votes are "
                  "sparser, so read the interval as optimistic")
    return {"accuracy": accuracy, "interval": [max(accuracy - half, 0.0), min(accuracy + half, 1.0)],
            "level": 0.9, "standard_error": standard_error(card, predictor), "basis": basis,
            "model": model()["version"]}
