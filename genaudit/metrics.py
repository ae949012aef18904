"""Every reported number, gathered from where it is declared (each diagnostic's module, the score, the clean
accuracy): the catalogue `explain`, the thresholds, the ranking and every renderer read."""

from __future__ import annotations

from genaudit.diagnostics import REGISTRY
from genaudit.estimate import METRIC as ESTIMATE
from genaudit.features import CLEAN_ACCURACY
from genaudit.registry import GROUPS, Metric
from genaudit.score import METRIC as SCORE

METRICS: list[Metric] = [ESTIMATE, SCORE, CLEAN_ACCURACY, *[m for d in REGISTRY for m in d.metrics]]
BY_NAME = {m.name: m for m in METRICS} | {m.path: m for m in METRICS}
BY_LABEL = {m.label: m for m in METRICS}
LAYER_METRICS = [m for m in METRICS if m.column]   # the per-layer table's columns
HEADLINE = [m for m in METRICS if m.headline]      # compare's table and trends
TOP_LEVEL = {ESTIMATE.name, SCORE.name, CLEAN_ACCURACY.name}  # at the scorecard's top level, not under diagnostics

# The metric that ranks models in `compare`, selects the best, and gates against a baseline: the estimate of
# held-out accuracy, the best within-run selector of genaudit's validity study (docs/validity.md).
PRIMARY = "estimate"

__all__ = ["BY_LABEL", "BY_NAME", "GROUPS", "HEADLINE", "LAYER_METRICS", "METRICS", "PRIMARY", "TOP_LEVEL", "Metric"]
