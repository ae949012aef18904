"""Renderers: read only the Scorecard and turn it into a terminal report, JSON or Markdown."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """How to present one headline number: where it is, what it means, which direction is better."""

    path: str
    label: str
    meaning: str
    better: str  # "higher" or "lower" or "" (descriptive)


HEADLINE = [
    Metric("clean_accuracy", "clean accuracy", "fraction of the audited (training) samples classified correctly",
           "higher"),
    Metric("ablation.auc", "ablation AUC",
           "area under accuracy as 0→100% of feature units are zeroed (random order), relative to clean", "higher"),
    Metric("noise.auc", "noise AUC",
           "area under accuracy as Gaussian noise up to 2× each unit's std is added, relative to clean", "higher"),
    Metric("selectivity.mean", "class selectivity",
           "mean class selectivity index of the units: 0 = responds to all classes, 1 = to one", ""),
]

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], lo: float = 0.0, hi: float = 1.0) -> str:
    """A one-line chart of values in [lo, hi]."""
    span = (hi - lo) or 1.0
    out = []
    for v in values:
        if v is None:
            out.append(" ")
            continue
        level = int(round((min(max(v, lo), hi) - lo) / span * (len(SPARK) - 1)))
        out.append(SPARK[level])
    return "".join(out)


def verdict(card: dict) -> str:
    """A plain reading of the headline numbers. Not a calibrated prediction: no threshold is claimed."""
    accuracy, classes = card.get("clean_accuracy"), card.get("classes") or 2
    if accuracy is not None and accuracy < 1.5 / classes:
        return (f"clean accuracy {accuracy:.3f} is near chance (1/{classes}): wrong preprocessing or labels that "
                "are not the model's? Robustness numbers mean little here; try --no-labels or other --mean/--std.")
    abl = card["diagnostics"]["ablation"]
    if abl["auc"] is None:
        return "undefined: the model gets no sample right, so robustness cannot be measured"
    curve = abl["curve"]
    half = curve["accuracy"][len(curve["accuracy"]) // 2] / curve["accuracy"][0]
    return (f"keeps {half:.0%} of its accuracy with {curve['fraction'][len(curve['fraction']) // 2]:.0%} of the "
            f"feature units ablated; ablation AUC {abl['auc']:.3f} (higher = generalizes better; uncalibrated, "
            "so compare models rather than read it alone)")
