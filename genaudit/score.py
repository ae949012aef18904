"""The generalization score: one number in [0, 1], higher = generalizes better, combining the diagnostics.

score = sigmoid(bias + sum_k w_k * z_k), where z_k is a diagnostic oriented so that higher is better (and
log-transformed where its range is unbounded) and every weight w_k >= 0, so the score is monotone in the
direction of each component. The components and weights come from genaudit's validation study on a model zoo
(zoo/fit_score.py, docs/validation.md): fitted on one data set, evaluated on another. A diagnostic missing from
a scorecard (e.g. undefined for a degenerate layer) makes the score undefined rather than silently biased.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from genaudit.registry import Better, Metric
from genaudit.scorecard import lookup

MODEL = Path(__file__).resolve().parent / "score_model.json"

METRIC = Metric(name="score", path="score.value", label="generalization score", group="score", better=Better.HIGHER,
                short="ranks models of one task (0–1)",
                meaning="predicted generalization in [0, 1], combining the diagnostics the validation study kept",
                formula="sigmoid(b + Σ_k w_k z_k), z_k oriented diagnostics, w_k ≥ 0 (genaudit/score_model.json)",
                source="genaudit validation study (docs/validation.md): fitted on the MNIST zoo, evaluated on "
                       "Fashion-MNIST",
                reading="Ranks models of one task; compare models rather than reading one value as an accuracy. "
                        "See docs/validation.md for how well it ranks and where it fails.", tag="score")


@lru_cache(maxsize=1)
def model() -> dict:
    return json.loads(MODEL.read_text(encoding="utf-8"))


def components() -> set[str]:
    """The top-level diagnostics (e.g. 'ablation') the score reads."""
    return {f["path"].split(".")[0] for f in model()["features"].values()}


def oriented(value: float, sign: int, transform: str) -> float:
    """A diagnostic turned into a higher-is-better feature."""
    if transform == "log":
        value = math.log(max(value, 1e-12))
    return sign * value


def features(card: dict, spec: dict | None = None) -> dict[str, float] | None:
    """The oriented components of the score for one scorecard (None if one is missing)."""
    spec = spec or model()
    out = {}
    for name, f in spec["features"].items():
        value = lookup(card, f["path"])
        if value is None:
            return None
        out[name] = oriented(value, f["sign"], f.get("transform", "none"))
    return out


def combine(z: dict[str, float], spec: dict | None = None) -> float:
    spec = spec or model()
    t = spec["bias"] + sum(spec["weights"][name] * z[name] for name in spec["features"])
    return 1.0 / (1.0 + math.exp(-t))


def generalization_score(card: dict) -> dict:
    """The score block of a scorecard: value in [0, 1] (None when a component is missing) and its parts."""
    spec = model()
    z = features(card, spec)
    return {
        "value": None if z is None else combine(z, spec),
        "components": {  # this model's own oriented component values, their weights and contributions to the logit
            name: {"value": None if z is None else z[name], "weight": spec["weights"][name],
                   "contribution": None if z is None else spec["weights"][name] * z[name]}
            for name in spec["features"]},
        "model": spec["version"],
        "meaning": "predicted generalization from the label-free diagnostics, in [0, 1]; higher = generalizes better; "
                   f"Kendall tau {spec['evaluation']['kendall']:.2f} with true holdout accuracy on "
                   f"{spec['evaluation']['data']} (not fitted on it)",
    }
