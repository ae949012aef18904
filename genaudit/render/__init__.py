"""Renderers: read only the documents genaudit produces and turn them into a format (`FORMATS`), plus the
helpers the formats share (number formatting, sparklines, the report's rows, the verdict)."""

from __future__ import annotations

from importlib import import_module
from typing import TextIO

from genaudit.metrics import GROUPS, LAYER_METRICS, METRICS, Metric
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


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def ranked_correlations(study: dict) -> list[tuple[str, dict]]:
    """A validation study's metrics, best oriented Kendall tau first."""
    return sorted(study["correlations"].items(), key=lambda kv: -(kv[1]["oriented_kendall"] or -9))


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


def layer_columns() -> list[tuple[str, str]]:
    """The per-layer table's columns: (key in a row, header with the better direction), units first."""
    return [("units", "units")] + [(m.column, f"{m.tag} {m.arrow}") for m in LAYER_METRICS]


# --format name -> "module:class" of its Renderer (imported only when chosen: rich, matplotlib stay unloaded)
FORMATS = {
    "table": "genaudit.render.terminal:TerminalRenderer",
    "json": "genaudit.render.json:JsonRenderer",
    "markdown": "genaudit.render.markdown:MarkdownRenderer",
    "html": "genaudit.render.html:HtmlRenderer",
}


def renderer_class(name: str) -> type:
    """The Renderer class of a format name (see FORMATS)."""
    module, cls = FORMATS[name].split(":")
    return getattr(import_module(module), cls)


def renderer(name: str, stream: TextIO):
    """A Renderer of format `name` writing to `stream`."""
    return renderer_class(name)(stream)
