"""Every reported number, gathered from where it is declared (each diagnostic's module, the score, the clean
accuracy): the catalogue `explain`, the thresholds, the ranking and every renderer read."""

from __future__ import annotations

from genaudit.diagnostics import REGISTRY
from genaudit.estimate import METRIC as ESTIMATE
from genaudit.features import CLEAN_ACCURACY
from genaudit.registry import GROUPS, Better, Metric
from genaudit.score import METRIC as SCORE
from genaudit.scorecard import lookup

METRICS: list[Metric] = [ESTIMATE, SCORE, CLEAN_ACCURACY, *[m for d in REGISTRY for m in d.metrics]]
BY_NAME = {m.name: m for m in METRICS} | {m.path: m for m in METRICS}
BY_LABEL = {m.label: m for m in METRICS}
LAYER_METRICS = [m for m in METRICS if m.column]   # the per-layer table's columns
HEADLINE = [m for m in METRICS if m.headline]      # compare's table and trends
TOP_LEVEL = {ESTIMATE.name, SCORE.name, CLEAN_ACCURACY.name}  # at the scorecard's top level, not under diagnostics

# The metric that ranks models in `compare`, selects the best, and gates against a baseline: the estimate of
# held-out accuracy, the best within-run selector of genaudit's validity study (docs/validity.md).
PRIMARY = "estimate"

# What a training logger or an experiment tracker records per audit: the estimate, training accuracy, the share of
# memorized samples, the v0.1 score and the headline diagnostics.
TRACKED = [ESTIMATE, CLEAN_ACCURACY, BY_NAME["memorized"], SCORE, *HEADLINE]


def tracked_values(card: dict) -> dict[str, float]:
    """The TRACKED numbers of a scorecard by metric name (those it has), with the estimate's 90% interval as
    `estimate_low` / `estimate_high`."""
    values = {m.name: lookup(card, m.path) for m in TRACKED}
    interval = (card.get("estimate") or {}).get("interval") or [None, None]
    values |= {"estimate_low": interval[0], "estimate_high": interval[1]}
    return {name: float(v) for name, v in values.items() if v is not None}


__all__ = ["BY_LABEL", "BY_NAME", "GROUPS", "Better", "HEADLINE", "LAYER_METRICS", "METRICS", "PRIMARY", "TOP_LEVEL",
           "TRACKED", "Metric", "tracked_values"]
