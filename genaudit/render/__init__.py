"""Renderers: read only the Scorecard and turn it into a terminal report or Markdown."""

from __future__ import annotations

from genaudit.metrics import GROUPS, METRICS, Metric
from genaudit.scorecard import lookup

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


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def rows(card: dict) -> list[tuple[str, Metric, float | None]]:
    """(group, metric, value) for every metric present in the scorecard, grouped in report order."""
    present = [(m.group, m, lookup(card, m.path)) for m in METRICS]
    present = [r for r in present if r[2] is not None or r[1].name in ("clean_accuracy", "importance_rho")]
    return sorted(present, key=lambda r: GROUPS.index(r[0]))


def verdict(card: dict) -> str:
    """A plain reading of the headline numbers. Not a calibrated prediction: no threshold is claimed."""
    if card.get("warnings"):
        return ("the clean predictions look wrong (see the warnings): every number below means little until "
                "that is fixed.")
    abl = card["diagnostics"]["ablation"]
    if abl["auc"] is None:
        return "undefined: the model gets no sample right, so robustness cannot be measured"
    curve = abl["curve"]
    half = curve["accuracy"][len(curve["accuracy"]) // 2] / curve["accuracy"][0]
    score = (card.get("score") or {}).get("value")
    lead = "" if score is None else f"generalization score {score:.3f} (0–1, higher = generalizes better); "
    return (f"{lead}keeps {half:.0%} of its accuracy with {curve['fraction'][len(curve['fraction']) // 2]:.0%} "
            "of the feature units ablated. Compare models of one task rather than reading one number alone.")


LAYER_COLUMNS = [  # (key in a per-layer row, header with its better-direction)
    ("units", "units"),
    ("intra_class_variance_sum", "Σ intra-class var"),
    ("intra_class_variance_ratio", "intra/total var ↓"),
    ("consistency", "consistency C ↓"),
    ("perplexity", "perplexity/N_c ·"),
    ("nodes_accuracy", "nodes acc ↑"),
    ("selectivity_mean", "selectivity ·"),
    ("magnitude", "L_r ↓"),
]
