"""Renderers: read only the documents genaudit produces and turn them into a format (`FORMATS`), plus the
helpers the formats share (number formatting, sparklines, the report's rows, the verdict)."""

from __future__ import annotations

from importlib import import_module
from typing import TextIO

from genaudit.diagnostics.memorization import SHIFT, weak
from genaudit.metrics import BY_NAME, GROUPS, LAYER_METRICS, METRICS, PRIMARY, Metric
from genaudit.scorecard import lookup

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], lo: float = 0.0, hi: float = 1.0) -> str:
    """A one-line chart of values in [lo, hi]."""
    if hi == lo:  # no differences to draw: a flat line, not a trend
        return "".join(" " if v is None else SPARK[len(SPARK) // 2] for v in values)
    span = hi - lo
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


SUSPECT_COLUMNS = ["index", "label", "predicted", "suggested", "suspicion"]  # the suspects table's and CSV's


def suspect_rows(result: dict) -> list[list[str]]:
    """The `top` rows of a suspects document as text cells (SUSPECT_COLUMNS), with their rank."""
    return [[str(i + 1), *(f"{r[c]:.2f}" if c == "suspicion" else str(r[c]) for c in SUSPECT_COLUMNS)]
            for i, r in enumerate(result["rows"][: result["top"]])]


def suspects_summary(result: dict) -> str:
    """One line: how many samples look mislabeled, the estimated share the model memorized, and what the suspicion
    read (one model, or a run's checkpoints)."""
    s = result["summary"]
    memorized = "" if s["fraction"] is None else (
        f"; estimated memorized (a likely wrong label the model fits anyway): {s['fraction']:.1%}")
    checkpoints = len(result.get("checkpoints", ()))
    judged = "neighbour disagreement" if checkpoints > 1 or s.get("shifted") else "suspicion"  # what the share reads
    line = (f"{s['suspect_fraction']:.1%} of the audited samples have a label their neighbours outvote "
            f"({judged} > {s['threshold']:g}){memorized}")
    judges = s.get("judges")
    if weak(judges):
        space = "patch" if judges["space"] == "patches" else judges["space"]
        line += (f". The neighbours are weak judges of labels here (two disjoint votes of the given labels agree on "
                 f"{judges['vote_consistency']:.0%} of samples in the {space} space: heavy label noise, or images whose "
                 "neighbours say little of their class, as natural images), so the share they outvote overstates the "
                 "wrong labels: read the ranking" + ("" if s["fraction"] is None else
                                                     "; the memorized share is validated on MNIST-like images only"))
    shifts = f"doubt of each label on the image moved {SHIFT} pixels each way"
    if checkpoints > 1:
        line += (f". Suspicion: the neighbours' disagreement and the run's doubt of each label over {checkpoints} "
                 "checkpoints" + (f", with the last one's {shifts}" if s.get("shifted") else ""))
    elif s.get("shifted"):
        line += f". Suspicion: the neighbours' disagreement and the model's {shifts}"
    return line


def earlier_checkpoints(result: dict) -> str:
    """The title's suffix ' (and N earlier checkpoints)' when the suspects document judged a run's checkpoints."""
    earlier = len(result.get("checkpoints", ())) - 1
    return "" if earlier < 1 else f" (and {earlier} earlier checkpoint{'s' if earlier > 1 else ''})"


def caveat(card: dict, metric: Metric) -> str | None:
    """A short warning every format shows beside `metric`'s value in this scorecard, or None: the memorized share
    where the neighbours are weak judges of the labels (natural images, heavy label noise), where it can overstate
    (0.35 on CIFAR-10 models trained on clean labels: docs/suspects.md)."""
    judges = (card.get("diagnostics", {}).get("memorization") or {}).get("judges")
    if metric.name != "memorized" or not weak(judges):
        return None
    return f"may overstate: weak judges ({judges['vote_consistency']:.2f})"


def rows(card: dict) -> list[tuple[str, Metric, float | None]]:
    """(group, metric, value) for every metric present in the scorecard, grouped in report order."""
    present = [(m.group, m, lookup(card, m.path)) for m in METRICS]
    present = [r for r in present if r[2] is not None or r[1].name in ("estimate", "clean_accuracy", "importance_rho")]
    return sorted(present, key=lambda r: GROUPS.index(r[0]))


def trained_note(card: dict) -> str:
    """How many images the model trained on, said after the audited samples: ' of N trained on' when
    `--train-size` says more than the data holds; for a labelled audit without it (the estimate carries its votes
    to that size), ' of N, all it trained on unless --train-size says more' (without ' of N' when every image is
    audited)."""
    data = card.get("data", {})
    trained, held = data.get("train_size"), data.get("source_size")
    if not trained or not held:
        return ""
    if trained > held:
        return f" of {trained} trained on"
    if data.get("train_size_given", True) or card.get("label_mode") != "labels":
        return ""
    of = "" if trained == card.get("samples") else f" of {trained}"
    return f"{of}, all it trained on unless --train-size says more"


def head_samples_note(card: dict) -> str:
    """'; head curves on N (ablation on M)': said when the head-evaluated curves (noise, ordered ablation, ...)
    or the random-order ablation used a subsample (at a layer whose head is not one affine map,
    --head-samples), else nothing."""
    diagnostics = card.get("diagnostics", {})
    used = (diagnostics.get("noise") or {}).get("samples")
    ablation = (diagnostics.get("ablation") or {}).get("samples")
    used = ablation if used is None else used
    if used in (None, card.get("samples")) and ablation in (None, card.get("samples")):
        return ""
    note = "" if used == card.get("samples") else f" head curves on {used} of them"
    if ablation not in (None, used):
        note += f"{',' if note else ''} ablation on {ablation}"
    return f";{note} (--head-samples)"


def verdict(card: dict) -> str:
    """A plain reading of the headline numbers, led by the estimate of held-out accuracy and its interval."""
    if card.get("warnings"):
        return ("the clean predictions look wrong (see the warnings): every number below means little until "
                "that is fixed.")
    estimate = card.get("estimate") or {}
    score = (card.get("score") or {}).get("value")
    parts = []
    if estimate.get("accuracy") is not None:
        lo, hi = estimate["interval"]
        parts.append(f"expected held-out accuracy {estimate['accuracy']:.2f} (90%: {lo:.2f}–{hi:.2f})")
    if score is not None:
        parts.append(f"generalization score {score:.3f} (ranks models of one task; higher is better)")
    abl = card["diagnostics"]["ablation"]
    if abl["auc"] is None:
        parts.append("the model gets no sample right, so robustness is undefined")
    return "; ".join(parts) + "." if parts else "undefined: no estimate or score could be computed."


def ranking_note(result: dict) -> str:
    """Why a comparison is not ranked by the default, the estimate of held-out accuracy, when no model has one
    (e.g. audited without labels, which the estimate needs); '' when the estimate has a value or ranks."""
    default = BY_NAME[PRIMARY]
    cards = result["scorecards"]
    if result["rank_by"]["metric"] == PRIMARY or any(lookup(c, default.path) is not None for c in cards):
        return ""
    why = ("the models were audited without labels, and there is no estimate without them"
           if any(c.get("label_mode") == "predictions" for c in cards) else "no model has a value of it")
    ranked = BY_NAME[result["rank_by"]["metric"]]
    return (f"ranked by {ranked.name} ({ranked.label}) instead of the default, {default.name} ({default.label}): "
            f"{why}; --rank-by picks another metric")


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
