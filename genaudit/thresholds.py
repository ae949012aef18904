"""CI gates: `--fail-under METRIC=VALUE` (fail when the metric is worse than VALUE, in its better direction),
`--fail-if METRIC<VALUE` / `METRIC>VALUE` (an explicit comparison, also for descriptive metrics), and
`--fail-if-worse-than BASELINE` (the primary metric against a stored scorecard of the same kind of audit)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from genaudit.errors import GenauditError
from genaudit.metrics import BY_NAME, PRIMARY, Better
from genaudit.scorecard import lookup, to_json


@dataclass(frozen=True)
class Threshold:
    metric: str      # scorecard path
    bound: float
    fail_below: bool  # True: fail when the value is below `bound`; False: when above


def _path(metric: str) -> str:
    return BY_NAME[metric].path if metric in BY_NAME else metric


def parse(spec: str) -> Threshold:
    """`--fail-under METRIC=VALUE`: fail when the metric is worse than VALUE — below it for a higher-is-better
    metric, above it for a lower-is-better one; a descriptive metric has no worse side (use --fail-if)."""
    metric, sep, value = spec.partition("=")
    try:
        if not sep or not metric.strip():
            raise ValueError
        metric, bound = metric.strip(), float(value)
    except ValueError:
        raise GenauditError(f"--fail-under takes METRIC=VALUE, e.g. ablation.auc=0.6 (got '{spec}').") from None
    known = BY_NAME.get(metric)
    if known is not None and known.better is Better.DESCRIPTIVE:
        raise GenauditError(f"--fail-under {metric}: '{known.name}' is descriptive (no better side). Say which side "
                            f"fails with --fail-if '{known.name}<{bound:g}' or '{known.name}>{bound:g}'.")
    return Threshold(_path(metric), bound, known is None or known.better is Better.HIGHER)


def parse_condition(spec: str) -> Threshold:
    """`--fail-if METRIC<VALUE` or `METRIC>VALUE`: fail when the comparison holds."""
    match = re.fullmatch(r"\s*([\w.\-]+)\s*([<>])\s*(-?[\d.eE+\-]+)\s*", spec)
    try:
        if match is None:
            raise ValueError
        bound = float(match.group(3))
    except ValueError:
        raise GenauditError(f"--fail-if takes METRIC<VALUE or METRIC>VALUE, e.g. 'consistency>1.5' (got '{spec}').") from None
    return Threshold(_path(match.group(1)), bound, match.group(2) == "<")


def failures(card: dict, thresholds: list[Threshold]) -> list[str]:
    """One line per failed threshold; an unknown metric is a usage error."""
    lines = []
    for t in thresholds:
        value = lookup(card, t.metric)
        if value is None:
            raise GenauditError(
                f"The scorecard has no numeric metric '{t.metric}' to check. Use a metric name from "
                "`genaudit explain` (e.g. ablation, noise, consistency) or a dotted scorecard path (ablation.auc)."
            )
        if t.fail_below and value < t.bound:
            lines.append(f"{t.metric} = {value:.4f} is below the required {t.bound:g}")
        elif not t.fail_below and value > t.bound:
            lines.append(f"{t.metric} = {value:.4f} is above the allowed {t.bound:g}")
    return lines


def load_baseline(path) -> dict:
    """A stored scorecard to gate against (`--fail-if-worse-than`), refused at once, before any audit, when its
    estimate came from another estimator than this genaudit's: no audit of this genaudit can compare with it (with
    labels its estimate model differs, without them its label mode)."""
    from genaudit.estimate import model
    from genaudit.scorecard import load

    baseline = load(path)
    stored = COMPARABLE["estimate model"](baseline)
    if stored is not None and stored != model()["version"]:
        _refuse([f"estimate model: baseline {stored!r}, this genaudit's {model()['version']!r}"])
    return baseline


def _refuse(differ: list[str]) -> None:
    raise GenauditError("The baseline scorecard was audited differently, so its numbers do not compare ("
                        + "; ".join(differ) + "). Regenerate the baseline with this genaudit and the same --data, "
                        "--samples, --layer, --labels/--no-labels, --seed and preprocessing.")


COMPARABLE = {  # what a baseline must share with the new audit for their numbers to compare
    "data": lambda c: (c.get("data", {}).get("spec"), c.get("data", {}).get("split"), c.get("data", {}).get("samples"),
                       c.get("data", {}).get("preprocess")),
    "layer": lambda c: c.get("layer", {}).get("name") if not c.get("layer", {}).get("default") else "(default)",
    "label mode": lambda c: c.get("label_mode"),
    "seed": lambda c: c.get("seed"),
    # another estimator (a new genaudit's refit) gives another estimate of the same model: 0.4.1 -> 0.4.2 moved the
    # README example's by 0.013
    "estimate model": lambda c: (c.get("estimate") or {}).get("model"),
}


def regressions(card: dict, baseline: dict | None, tolerance: float) -> list[str]:
    """One line if the primary metric got worse than the baseline's by more than `tolerance`. A baseline audited
    on other data, another layer, another label mode or seed, or estimated by another estimator (`estimate.model`)
    is refused: its numbers do not compare."""
    if baseline is None:
        return []
    stored = json.loads(to_json(card))  # as the baseline was stored: rounded, lists for tuples
    differ = [f"{what}: baseline {get(baseline)!r}, this audit {get(stored)!r}" for what, get in COMPARABLE.items()
              if get(baseline) != get(stored)]
    if differ:
        _refuse(differ)
    metric = BY_NAME[PRIMARY]
    new, old = lookup(card, metric.path), lookup(baseline, metric.path)
    if old is None:
        raise GenauditError(f"The baseline scorecard has no '{metric.path}'; regenerate it with this genaudit.")
    if new is None:
        return [f"{metric.path} is undefined for the new model (baseline {old:.4f})"]
    drop = metric.better.oriented(old) - metric.better.oriented(new)
    if drop > tolerance:
        return [f"{metric.path} = {new:.4f} is worse than the baseline's {old:.4f} by {drop:.4f} "
                f"(tolerance {tolerance:g})"]
    return []
