"""Self-contained HTML reports: plots drawn with matplotlib, embedded as base64 PNG, no network needed to view."""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from typing import TYPE_CHECKING

from genaudit.features import CLEAN_ACCURACY
from genaudit.metrics import HEADLINE, Metric
from genaudit.render import (
    SUSPECT_COLUMNS,
    caveat,
    fmt,
    head_samples_note,
    trained_note,
    earlier_checkpoints,
    layer_columns,
    ranked_correlations,
    ranking_note,
    rows,
    suspect_rows,
    suspects_summary,
    verdict,
)
from genaudit.render.escape import html_text as esc
from genaudit.render.interface import Renderer
from genaudit.scorecard import lookup

if TYPE_CHECKING:
    from matplotlib.axis import Axis

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.best{background:#e6f4ea}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{border:1px solid #eee}
.suspects{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:16px 12px;margin:1em 0}
.suspects figure{margin:0}.suspects img{display:block;border:1px solid #ccc}.suspects img.px{image-rendering:pixelated}
.suspects figcaption{font-size:13px;margin-top:4px;overflow-wrap:anywhere}
.meta{color:#555}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px}.flag{white-space:nowrap}.caveat{color:#8a5a00}code{background:#f6f6f6;padding:1px 4px}
"""


PNG_URI = "data:image/png;base64,"
THUMBNAIL = 96  # px: the box a suspect's thumbnail is shown in (see _img)


def _meaning(card: dict, metric: Metric) -> str | Markup:
    """The metric's meaning, with its caveat for this scorecard (`caveat`) in bold when it has one."""
    warned = caveat(card, metric)
    return metric.meaning if warned is None else Markup(f"{esc(metric.meaning)} <b class=caveat>{esc(warned)}</b>")


def _png_size(uri: str) -> tuple[int, int] | None:
    """(width, height) of a PNG data URI, read from its IHDR chunk; None when it is not one."""
    if not uri.startswith(PNG_URI):
        return None
    try:  # signature (8 bytes), IHDR's length and type (8), width and height (8): the first 32 base64 characters
        head = base64.b64decode(uri[len(PNG_URI):len(PNG_URI) + 32], validate=True)
    except binascii.Error:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (width, height) if width and height else None


def _img(uri: str, alt: str, fit: int | None = None) -> str:
    """An <img> of a PNG data URI with its size set, '' when `uri` is not a PNG. Its own size, or with `fit` (a
    thumbnail): a small image at the largest whole multiple of its size within `fit` px, its pixels kept sharp;
    a larger one shrunk to `fit` px on its longer side. Either way the aspect ratio is the image's own."""
    size = _png_size(uri)
    if size is None:
        return ""
    width, height, sharp = *size, ""
    if fit and max(size) <= fit:
        scale = fit // max(size)
        width, height, sharp = width * scale, height * scale, " class=px" if scale > 1 else ""
    elif fit:
        width, height = round(width * fit / max(size)), round(height * fit / max(size))
    return f'<img src="{esc(uri)}"{sharp} width={width} height={height} alt="{esc(alt)}">'


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def _png(plt, fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return _img(PNG_URI + base64.b64encode(buffer.getvalue()).decode(), "plot")


def _whole_ticks(axis: Axis) -> None:
    """Ticks at whole numbers only, on an axis of counts or checkpoint numbers."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _curve(series: list[tuple[str, list, list]], title: str, xlabel: str, ylabel: str, whole_x: bool = False) -> str:
    """Line plot of (label, x, y) series; `whole_x`: x counts something (checkpoints), ticks at whole numbers."""
    plt, fig, ax = _figure()
    for label, x, y in series:
        ax.plot(x, y, marker=".", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if whole_x:
        _whole_ticks(ax.xaxis)
    ax.set_ylim(bottom=0)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(plt, fig)


def _histogram(card: dict) -> str:
    hist = card["diagnostics"]["selectivity"]["histogram"]
    plt, fig, ax = _figure()
    edges = hist["edges"]
    ax.bar(edges[:-1], hist["counts"], width=edges[1] - edges[0], align="edge", edgecolor="white")
    ax.set(title="Class selectivity of the units", xlabel="selectivity index (0 = all classes, 1 = one)",
           ylabel="units")
    _whole_ticks(ax.yaxis)
    return _png(plt, fig)


class Markup(str):
    """A table cell that is already HTML (built from escaped parts); every other cell is escaped."""


def _code(text: object) -> Markup:
    """Untrusted text (a path, a layer or class name) as an escaped <code> cell."""
    return Markup(f"<code>{esc(text)}</code>")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def _table(header: list[str], body: list[list[str]], numeric: set[int], best: int | None = None) -> str:
    """An HTML table; cells are text (escaped here) unless they are `Markup`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    lines = []
    for i, row in enumerate(body):
        cells = "".join(f'<td{" class=n" if j in numeric else ""}>{c if isinstance(c, Markup) else esc(c)}</td>'
                        for j, c in enumerate(row))
        lines.append(f'<tr class="best">{cells}</tr>' if i == best else f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def _warning(text: str) -> str:
    """A warning as HTML, its command-line flags (with their value) as code that does not wrap."""
    return re.sub(r"(--[a-z][a-z-]*(?: [a-z0-9][\w.,]*)?)", r"<code class=flag>\1</code>", esc(text))


def score_page(card: dict) -> str:
    """One model: summary, diagnostics table, ablation/noise curves, selectivity histogram, per-layer table."""
    diag = card["diagnostics"]
    abl, noise = diag["ablation"]["curve"], diag["noise"]["curve"]
    ordered = diag["selectivity"]["ordered_ablation"]
    plots = [
        _curve([("random order", abl["fraction"], abl["accuracy"]),
                ("most selective first", abl["fraction"], ordered["most_selective_first"]["curve"]["accuracy"]),
                ("least selective first", abl["fraction"], ordered["least_selective_first"]["curve"]["accuracy"])],
               "Cumulative ablation", "fraction of units zeroed", "accuracy"),
        _curve([("noise", noise["scale"], noise["accuracy"])], "Noise robustness",
               "noise std (× each unit's std)", "accuracy"),
        _histogram(card),
    ]
    table = _table(["group", "metric", "value", "better", "meaning"],
                   [[g, Markup(f"{esc(m.label)} <code>{esc(m.name)}</code>"), fmt(v), m.arrow, _meaning(card, m)]
                    for g, m, v in rows(card)], numeric={2})
    body = (f"<h1>genaudit report</h1><p class=meta>model <code>{esc(card['model']['path'])}</code> "
            f"({esc(card['model']['format'])}) · layer <code>{esc(card['layer']['name'])}</code> "
            f"({esc(card['layer']['units'])} units) · data {esc(card['data']['spec'])}, {esc(card['samples'])} "
            f"samples{esc(trained_note(card))}{esc(head_samples_note(card))}, {esc(card['label_mode'])} · genaudit "
            f"{esc(card['genaudit_version'])}</p>"
            f"<p><b>Verdict:</b> {esc(verdict(card))}</p>"
            + "".join(f"<p class=warn><b>Warning:</b> {_warning(w)}</p>" for w in card.get("warnings", []))
            + f"<h2>Diagnostics</h2>{table}"
            f"<h2>Curves</h2><div class=plots>{''.join(plots)}</div>")
    if "layers" in card:
        body += (f"<h2>Per layer</h2><p>NSR would help most at <code>{esc(card['regularize_layer']['name'])}</code> "
                 "(largest aggregated intra-class variance).</p>"
                 + _table(["layer", *[h for _, h in layer_columns()]],
                          [[_code(r["name"]), *[str(r[k]) if k == "units" else fmt(r[k])
                                                                for k, _ in layer_columns()]] for r in card["layers"]],
                          numeric=set(range(1, len(layer_columns()) + 1))))
    return _page(f"genaudit: {card['model']['path']}", body)


def compare_page(result: dict) -> str:
    """A series of models: table with the best highlighted, trends of the headline metrics, drift, advice."""
    cards = result["scorecards"]
    steps = list(range(1, len(cards) + 1))
    trends = [(m.label, m.path) for m in [CLEAN_ACCURACY, *HEADLINE]]
    plots = [
        _curve([(label, steps, [lookup(c, path) for c in cards]) for label, path in trends],
               "Trends across the series", "checkpoint #", "value", whole_x=True),
        _curve([("CKA to previous", steps[1:], [r["drift"]["previous"]["cka"] for r in result["models"][1:]]),
                ("CKA to final", steps, [r["drift"]["final"]["cka"] for r in result["models"]]),
                ("SVCCA to final", steps, [r["drift"]["final"]["svcca"] for r in result["models"]])],
               "Representation drift", "checkpoint #", "similarity", whole_x=True),
        _curve([(f"#{i + 1}", c["diagnostics"]["ablation"]["curve"]["fraction"],
                 c["diagnostics"]["ablation"]["curve"]["accuracy"]) for i, c in enumerate(cards)],
               "Ablation curves", "fraction of units zeroed", "accuracy"),
    ]
    best = next((i for i, r in enumerate(result["models"]) if r["model"] == result["selected"]), None)
    table = _table(["#", "model", "rank", result["rank_by"]["metric"], "train acc"],
                   [[str(i + 1), _code(r["model"]), str(r["rank"] or "—"), fmt(r["value"]),
                     fmt(r["clean_accuracy"])] for i, r in enumerate(result["models"])], numeric={0, 2, 3, 4},
                   best=best)
    stop = result["early_stopping"]
    note = ranking_note(result)
    selected = (f"none ({esc(result['selection']['why'])})" if result["selected"] is None else
                f"<code>{esc(result['selected'])}</code>{_not_clear(result)}")
    peak = "none" if stop["peak"] is None else f"<code>{esc(stop['peak'])}</code>"
    body = (f"<h1>genaudit comparison</h1><p class=meta>{len(cards)} models on {esc(result['data']['spec'])} "
            f"({esc(result['data']['samples'])} samples); ranked by {esc(result['rank_by']['metric'])} "
            f"({esc(result['rank_by']['better'])} is better)</p>"
            + (f"<p class=warn>{esc(note)}</p>" if note else "") + table
            + f"<p><b>Selected:</b> {selected}<br><b>Peak:</b> {peak} · <b>memorization sets in:</b> "
            f"{esc(stop['memorization_onset'] or 'not detected')} ({esc(stop['evidence'])})</p>"
            + "".join(f"<p class=warn><b>Warning</b> (<code>{esc(c['model']['path'])}</code>): {_warning(w)}</p>"
                      for c in cards for w in c.get("warnings", []))
            + _not_audited(result) + f"<div class=plots>{''.join(plots)}</div>")
    return _page("genaudit comparison", body)


def _not_clear(result: dict) -> str:
    """Why the selected model is not a clear winner (tied with others within sampling error), or nothing."""
    tie = result.get("selection", {})
    return "" if tie.get("significant", True) else f" (<b>not a clear winner</b>: {esc(tie['why'])})"


def _not_audited(document: dict) -> str:
    """The models of a comparison or study that could not be audited, with why."""
    return "".join(f"<p class=warn><b>Not audited</b> (<code>{esc(f['model'])}</code>): "
                   f"{esc(f['error'])}</p>" for f in document.get("failed", []))


def validation_page(study: dict) -> str:
    """Validation study: oriented Kendall tau per metric (best first, as every format orders them), and the best
    directional metrics against holdout accuracy."""
    corr = {k: v for k, v in study["correlations"].items() if v["oriented_kendall"] is not None}
    names = sorted(corr, key=lambda k: corr[k]["oriented_kendall"])
    plt, fig, ax = _figure()
    ax.barh(names, [corr[k]["oriented_kendall"] for k in names])
    ax.set(title="Rank agreement with holdout accuracy", xlabel="oriented Kendall τ (+1 = perfect ranking)")
    bars = _png(plt, fig)
    truth = [m["holdout_accuracy"] for m in study["models"]]
    scatter = []
    for name in names[::-1][:4]:
        plt, fig, ax = _figure()
        ax.scatter([m["metrics"][name] for m in study["models"]], truth, s=12)
        ax.set(title=f"{name} (τ = {corr[name]['kendall']:+.2f})", xlabel=name, ylabel="holdout accuracy")
        scatter.append(_png(plt, fig))
    table = _table(["metric", "better", "oriented τ", "Kendall τ", "Spearman ρ", "mean τ within runs"],
                   [[_code(k), v["better"] or "·", fmt(v["oriented_kendall"]), fmt(v["kendall"]),
                     fmt(v["spearman"]), fmt(v["within_run_kendall_mean"])]
                    for k, v in ranked_correlations(study)], numeric={2, 3, 4, 5})
    body = (f"<h1>genaudit validation</h1><p class=meta>{len(study['models'])} models; training data "
            f"{esc(study['data']['spec'])}, holdout {esc(study['holdout']['spec'])}</p>{table}"
            f"{_not_audited(study)}<div class=plots>{bars}{''.join(scatter)}</div>")
    return _page("genaudit validation", body)


def suspects_page(result: dict) -> str:
    """The most suspicious training samples as a grid of thumbnails (each at a whole multiple of its own size)
    with their given and suggested class, and the table of the same rows."""
    cards = []
    for i, row in enumerate(result["rows"][: result["top"]]):
        image = _img(row.get("thumbnail") or "", f"sample {row['index']}", fit=THUMBNAIL)
        cards.append(f"<figure>{image}<figcaption>#{i + 1} <code>{esc(row['index'])}</code><br>"
                     f"given <b>{esc(row['label'])}</b> · suggested <b>{esc(row['suggested'])}</b><br>predicted "
                     f"{esc(row['predicted'])} · suspicion {row['suspicion']:.2f}</figcaption></figure>")
    body = (f"<h1>genaudit suspects</h1><p class=meta>model <code>{esc(result['model']['path'])}</code>"
            f"{esc(earlier_checkpoints(result))} · data "
            f"{esc(result['data']['spec'])}, {esc(result['samples'])} samples</p>"
            + "".join(f"<p class=warn><b>Warning:</b> {_warning(w)}</p>" for w in result.get("warnings", []))
            + f"<p>{esc(suspects_summary(result))}.</p><div class=suspects>{''.join(cards)}</div>"
            + _table(["#", *SUSPECT_COLUMNS], suspect_rows(result), numeric={0, 2, 3, 4, 5}))
    return _page("genaudit suspects", body)


class HtmlRenderer(Renderer):
    """A self-contained HTML page (plots embedded as PNG, nothing external)."""

    name = "html"

    def report(self, card: dict, failures: list[str] | None = None) -> None:
        self.stream.write(score_page(card))

    def comparison(self, result: dict) -> None:
        self.stream.write(compare_page(result))

    def validation(self, study: dict) -> None:
        self.stream.write(validation_page(study))

    def suspects(self, result: dict) -> None:
        self.stream.write(suspects_page(result))
