"""Expected held-out accuracy, with a 90% interval, from the audit's own numbers on training data.

estimate = clip(training accuracy - gap, 0, 1): training accuracy (`clean_accuracy`, against the given labels) is
the baseline no estimate may do worse than, and the fitted part is the generalization gap, linear in terms that
each say how far the model's predictions on its training images depart from what a reference that never
memorized them says: how far training accuracy lies above the model's agreement with the leave-one-out neighbour
vote of the labels, in the patch space (features of the audited images alone, `genaudit.patches`; the vote carried
to the training set's size) and in the feature layer's space, each weighted by how reliable patch neighbours are
on this data (their vote consistency). A vote is never read as the accuracy itself, so the estimate is not capped
by the vote's own accuracy. The coefficients come from genaudit's validity study (zoo/study_estimate.py,
docs/validity.md), fitted on three model zoos (the form and loss chosen by the study's rule: `form`, `loss` in
estimate_model.json) and evaluated on zoos, data sets and families it never saw. Audits without a patch space
(samples that are not images) use the `fallback` estimator, chosen by the same rule among the forms that read
the pixel vote instead, and `basis` says so.

The interval is conformal on residuals normalized by (floor + |gap|), calibrated on the errors of models from a
zoo and data set the fit did not see (each in turn predicted by a fit on the others: a user's model is such a
model): narrow where the model is predicted to generalize, wide where a large gap is predicted (hard data such as
natural images); it widens further by |c_k| times how far each term lies outside the range the zoos covered, and
`basis` says why.

Audits with labels use the estimator; without labels there is none (the label-free votes ranked models poorly
in the study), and `basis` says so.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from genaudit.features import share_error
from genaudit.registry import Better, Metric
from genaudit.scorecard import lookup

MODEL = Path(__file__).resolve().parent / "estimate_model.json"

METRIC = Metric(name="estimate", path="estimate.accuracy", label="expected held-out accuracy", group="estimate",
                better=Better.HIGHER, short="accuracy expected on unseen data",
                meaning="expected accuracy on held-out data from the training data's distribution (90% interval in "
                        "estimate.interval)",
                formula="clip(train acc - gap, 0, 1), gap = b + Σ_k c_k x_k over neighbour-vote terms; interval ± "
                        "conformal q90 · (floor + |gap|) (+ out-of-range widening)",
                source="genaudit validity study (docs/validity.md); the gap predicted after Jiang et al. 2019, the "
                       "neighbour vote after the PGDL line of work on predicting generalization from training data",
                reading="An estimate, not a measurement: read it with its interval and `estimate.basis`. Validated on "
                        "MNIST, Fashion-MNIST and CIFAR-10 models, small-data zoos and full-data recipes; on very "
                        "different data or models the interval says less than it claims.", tag="est. acc",
                error="estimate.standard_error")


@lru_cache(maxsize=1)
def model() -> dict:
    return json.loads(MODEL.read_text(encoding="utf-8"))


def _signed(path: str) -> tuple[float, str]:
    return (-1.0, path[1:]) if path.startswith("-") else (1.0, path)


def _sum(card: dict, paths: list[str]) -> float | None:
    """The signed sum of the scorecard values at `paths` ('-' before a path subtracts it); None if one is missing."""
    total = 0.0
    for path in paths:
        sign, path = _signed(path)
        value = lookup(card, path)
        if value is None:
            return None
        total += sign * value
    return total


def terms(card: dict, spec: dict) -> dict[str, float] | None:
    """The estimator's terms read from a scorecard: each the signed sum of its `paths`, times the signed sum of
    its `times` paths when it has them (None when a value is missing)."""
    values = {}
    for name, term in spec["terms"].items():
        value = _sum(card, term["paths"])
        factor = _sum(card, term["times"]) if "times" in term else 1.0
        if value is None or factor is None:
            return None
        values[name] = value * factor
    return values


def _share_error(card: dict, path: str) -> float:
    """The sampling standard error sqrt(p (1 - p) / n) of a value that is a share: clean accuracy (n = every
    audited sample) or a neighbour-vote share (n = that vote's voters, its block's `samples`: at most 2,000
    whatever the audit's size); 0 for values that are not shares."""
    if ".at_training_size." in path:  # a(N) = 1 - (1 - a_n) r^b: the error of a_n scaled by r^b
        block, key = path.split(".at_training_size.")
        measured, carried = lookup(card, f"{block}.{key}"), lookup(card, path)
        scale = (1.0 - carried) / (1.0 - measured) if measured < 1.0 else 1.0
        return _share_error(card, f"{block}.{key}") * scale
    if path == "clean_accuracy":
        n = card.get("samples")
    elif path.startswith("diagnostics.neighbours."):
        n = lookup(card, path.rsplit(".", 1)[0] + ".samples")
    else:
        return 0.0
    return share_error(lookup(card, path), max(int(n or 0), 1)) or 0.0


def standard_error(card: dict, spec: dict) -> float:
    """Sampling standard error of the estimate from the shares it reads (delta method: each distinct share counted
    once with its total derivative; clean accuracy's includes the 1 of `clean_accuracy - gap`)."""
    gradient = {"clean_accuracy": 1.0}
    for name, term in spec["terms"].items():
        if "times" in term:  # d(a·b) = b·da + a·db
            factors = [(term["paths"], _sum(card, term["times"])), (term["times"], _sum(card, term["paths"]))]
        else:
            factors = [(term["paths"], 1.0)]
        for paths, other in factors:
            for path in paths:
                sign, path = _signed(path)
                gradient[path] = gradient.get(path, 0.0) - sign * other * spec["coefficients"][name]
    return math.sqrt(sum((g * _share_error(card, path)) ** 2 for path, g in gradient.items()))


def _carried_blocks(spec: dict) -> list[str]:
    """The neighbour-vote blocks whose vote carried to the training set's size the estimator reads."""
    return sorted({path.lstrip("-").split(".at_training_size.")[0] for term in spec["terms"].values()
                   for path in term["paths"] if ".at_training_size." in path})


def _undefined(basis: str) -> dict:
    return {"accuracy": None, "interval": None, "level": 0.9, "standard_error": None, "basis": basis}


def estimate(card: dict) -> dict:
    """The scorecard's `estimate` block: accuracy, interval [lo, hi] (90%), basis (what it rests on)."""
    if card.get("label_mode", "labels") != "labels":
        return _undefined("no estimate without labels: label-free neighbour votes ranked held-out accuracy poorly "
                          "in genaudit's validity study (docs/validity.md); audit with the training labels for an "
                          "estimate")
    spec = model()
    x = terms(card, spec)
    fallback = None
    if x is None and "fallback" in spec:  # e.g. no patch space: the samples are not images
        fallback = spec["fallback"]["when"]
        spec = {**spec, **spec["fallback"]}
        x = terms(card, spec)
    train = lookup(card, "clean_accuracy")
    if x is None or train is None:
        return _undefined("undefined: a diagnostic the estimate reads is missing from this audit")
    coefficients = spec["coefficients"]
    gap = spec["intercept"] + sum(coefficients[k] * x[k] for k in x)
    conformal = spec["conformal"]
    half = conformal["quantile_90"] * (conformal["scale_floor"] + abs(gap))
    outside = []
    for name, (lo, hi) in spec["range"].items():
        excess = max(lo - x[name], x[name] - hi, 0.0)
        if excess > 0:
            half += abs(coefficients[name]) * excess
            outside.append(f"{name} = {x[name]:.3f} outside the zoos' [{lo:.3f}, {hi:.3f}]")
    consistency = lookup(card, "diagnostics.neighbours.input.vote_consistency")
    floor = conformal.get("abs_unreliable")
    if floor is not None and consistency is not None and consistency < conformal["unreliable_below"]:
        half = max(half, floor)
        outside.append(f"pixel neighbours are no reliable reference here (two disjoint votes agree on "
                       f"{consistency:.0%} of samples: heavy label noise, or natural images where pixel distance means "
                       f"little), so the interval is at least ±{floor:.3f}, the 90% error of such models in the study; "
                       "on CIFAR-10 the estimate erred by 0.065 on average when no CIFAR-10 model was fitted on, "
                       "and by 0.03-0.05 when another architecture's CIFAR-10 models were; on mnist-clutter (digits "
                       "on noise: clean labels, neighbours as weak, never fitted on) by 0.091, mostly too low "
                       "(docs/validity.md)")
    accuracy = min(max(train - gap, 0.0), 1.0)
    fitted = spec["fitted_on"]
    basis = (f"training accuracy {train:.3f} minus a predicted generalization gap of {gap:+.3f} (linear in "
             f"{', '.join(spec['terms'])}; fitted on {fitted['models']} models: {', '.join(fitted['datasets'])}; "
             f"{', '.join(fitted['archs'])}); 90% conformal interval ±{half:.3f}, calibrated on zoos and data sets "
             "left out of the fit, wider for larger gaps")
    if outside:
        basis += "; widened because " + "; ".join(outside)
    if fallback:
        basis += f"; {fallback}"
    for block in _carried_blocks(spec):
        carried, voters = lookup(card, f"{block}.at_training_size.size"), lookup(card, f"{block}.samples")
        if carried and voters:
            carried, voters = int(carried), int(voters)
            space = {"patches": "patch-space"}.get(block.rsplit(".", 1)[-1], block.rsplit(".", 1)[-1])
            basis += (f"; the {space} vote is carried from its {voters} voters to the {carried} training images "
                      "(--train-size, else the data set's size: audit the whole training set or give its size)"
                      if carried > voters else f"; the {space} vote ran on all {carried} training images")
    pooled = lookup(card, "diagnostics.neighbours.patches.pooled_by")
    if pooled and pooled > 1 and any("neighbours.patches" in p for t in spec["terms"].values() for p in t["paths"]):
        basis += (f"; the patch space pooled these images by {pooled} to at most 32 pixels a side, and the study "
                  "validated it on images of 28-32 pixels")
    if not card.get("layer", {}).get("default", True):
        basis += ("; fitted on audits of the default feature layer, and this one audits another (--layer): the "
                  "feature-space vote means something else here")
    samples, needed = card.get("samples", 0), spec.get("requires", {}).get("samples", 0)
    if samples < needed:
        basis += (f"; fitted on audits of {needed} samples and this one has {samples}: neighbour votes are "
                  "sparser, so read the interval as optimistic")
    return {"accuracy": accuracy, "interval": [max(accuracy - half, 0.0), min(accuracy + half, 1.0)],
            "level": 0.9, "standard_error": standard_error(card, spec), "basis": basis, "gap": gap,
            "model": spec["version"]}
