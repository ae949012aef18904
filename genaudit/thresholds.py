"""CI gates: `--fail-under METRIC=VALUE` checks against a scorecard."""

from __future__ import annotations

from dataclasses import dataclass

from genaudit.errors import GenauditError
from genaudit.metrics import BY_NAME, PRIMARY
from genaudit.scorecard import lookup


@dataclass(frozen=True)
class Threshold:
    metric: str
    minimum: float


def parse(spec: str) -> Threshold:
    metric, sep, value = spec.partition("=")
    try:
        if not sep or not metric.strip():
            raise ValueError
        metric = metric.strip()
        return Threshold(BY_NAME[metric].path if metric in BY_NAME else metric, float(value))
    except ValueError:
        raise GenauditError(f"--fail-under takes METRIC=VALUE, e.g. ablation.auc=0.6 (got '{spec}').") from None


def failures(card: dict, thresholds: list[Threshold]) -> list[str]:
    """One line per failed threshold; an unknown metric is a usage error."""
    lines = []
    for t in thresholds:
        value = lookup(card, t.metric)
        if value is None:
            raise GenauditError(
                f"--fail-under: the scorecard has no numeric metric '{t.metric}'. Use a metric name from "
                "`genaudit explain` (e.g. ablation, noise, consistency) or a dotted scorecard path (ablation.auc)."
            )
        if value < t.minimum:
            lines.append(f"{t.metric} = {value:.4f} is below the required {t.minimum:g}")
    return lines


def load_baseline(path) -> dict:
    """A stored scorecard to gate against (`--fail-if-worse-than`)."""
    from genaudit.scorecard import load

    return load(path)


def regressions(card: dict, baseline: dict | None, tolerance: float) -> list[str]:
    """One line if the primary metric got worse than the baseline's by more than `tolerance`."""
    if baseline is None:
        return []
    metric = BY_NAME[PRIMARY]
    new, old = lookup(card, metric.path), lookup(baseline, metric.path)
    if old is None:
        raise GenauditError(f"The baseline scorecard has no '{metric.path}'; regenerate it with this genaudit.")
    if new is None:
        return [f"{metric.path} is undefined for the new model (baseline {old:.4f})"]
    drop = (old - new) if metric.better == "higher" else (new - old)
    if drop > tolerance:
        return [f"{metric.path} = {new:.4f} is worse than the baseline's {old:.4f} by {drop:.4f} "
                f"(tolerance {tolerance:g})"]
    return []
