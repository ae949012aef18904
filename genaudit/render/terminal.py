"""The rich terminal report: summary panel, grouped diagnostics table, inline curves, per-layer table."""

from __future__ import annotations

import os
from pathlib import Path

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.panel import Panel
from rich.segment import Segments
from rich.table import Table

from genaudit.metrics import BY_NAME, HEADLINE, Better
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
    signed,
    sparkline,
    suspect_rows,
    suspects_summary,
    verdict,
)
from genaudit.render.escape import terminal_text as shown
from genaudit.render.interface import Renderer
from genaudit.scorecard import lookup


class TerminalRenderer(Renderer):
    """The rich terminal report (`--format table`, the default)."""

    name = "table"

    def __init__(self, stream):
        super().__init__(stream)
        self.console = Console(file=stream, highlight=False)

    def report(self, card: dict, failures: list[str] | None = None) -> None:
        report(card, self.console, failures)
        timings = getattr(card, "timings", None)
        if timings:
            self.console.print("[dim]time: " + " · ".join(f"{k.replace('_', ' ')} {v:.2f}s"
                                                          for k, v in timings.items()) + "[/]")

    def comparison(self, result: dict) -> None:
        comparison(result, self.console)

    def validation(self, study: dict) -> None:
        validation(study, self.console)

    def suspects(self, result: dict) -> None:
        for warning in result.get("warnings", []):
            self.console.print(f"[bold yellow]warning:[/] {shown(warning)}", highlight=False)
        table = Table(title=f"Most suspicious training samples of {shown(result['model']['path'])}"
                            f"{earlier_checkpoints(result)} "
                            f"(top {result['top']})",
                      title_justify="left", box=box.SIMPLE_HEAD,
                      caption="label: given; suggested: the neighbours' vote; suspicion 0–1, higher = more likely "
                              "mislabeled or memorized", caption_justify="left")
        for col in ("#", *SUSPECT_COLUMNS):  # the index (a file name in an image folder) whole, for copying
            table.add_column(col, justify="left" if col == "index" else "right", no_wrap=True)
        for cells in suspect_rows(result):
            table.add_row(*map(shown, cells))
        print_whole(self.console, table)
        self.console.print(suspects_summary(result) + ".", highlight=False)


def print_whole(console: Console, renderable: Table | Panel, need: int | None = None) -> None:
    """Print a table or panel without cutting or folding what a user copies (model paths, layer names, metric
    names): when that does not fit the console's width (80 columns in a CI log), it is drawn as wide as it
    needs and its lines run on. `need`: that width; by default a table's natural width, for tables whose
    columns are all no-wrap (Rich cuts a wrapping column below its longest word to fit a width), their
    headers `stacked` to stay narrow."""
    if need is None:
        need = Measurement.get(console, console.options.update_width(10**6), renderable).maximum
    if need <= console.width:
        console.print(renderable)
    else:
        console.print(Segments(console.render(renderable, console.options.update_width(need))), crop=False)


def stacked(header: str) -> str:
    """A column header on two lines, its last word (an arrow, a unit) under the rest."""
    return "\n".join(header.rsplit(" ", 1))


def relative(paths: list[str]) -> tuple[str, list[str]]:
    """The folder that holds every path ('' when they share none) and each path relative to it: a table of
    checkpoints shows their names, not the folder over again."""
    try:
        folder = os.path.commonpath([str(Path(p).parent) for p in paths])
    except ValueError:  # absolute and relative paths mixed
        folder = ""
    if folder in ("", "."):
        return "", paths
    return folder, [str(Path(p).relative_to(folder)) for p in paths]


def report(card: dict, console: Console, failures: list[str] | None = None) -> None:
    model, layer, data = card["model"], card["layer"], card["data"]
    label_mode = ("the given labels" if card["label_mode"] == "labels"
                  else "model's own predictions (no labels: accuracy = agreement with the clean model)")
    summary = Table.grid(padding=(0, 2))
    summary.add_row("[bold]model[/]", f"{shown(model['path'])}  [dim]{model['format']}, sha256 "
                                      f"{model['sha256'][:12]}…[/]")
    summary.add_row("[bold]layer[/]", f"{shown(layer['name'])}  [dim]{shown(layer['op'])}, shape {layer['shape']}, "
                                      f"{layer['units']} units{', default' if layer['default'] else ''}[/]")
    output = model.get("output", {})
    outputs = (f", output '{shown(output['name'])}' ({output['index']} of {output['of']}; --output to choose)"
               if output.get("of", 1) > 1 else "")
    summary.add_row("[bold]input[/]", f"{model['input_shape']} per sample, fed {model.get('input_layout')}  "
                                      f"[dim]{model['output_kind']}{outputs}[/]")
    summary.add_row("[bold]data[/]", f"{shown(data['spec'])} ({data['split']} split), {card['samples']} samples"
                                     f"{trained_note(card)}, seed {card['seed']}{head_samples_note(card)}")
    summary.add_row("[bold]reference[/]", label_mode)
    summary.add_row("[bold]verdict[/]", shown(verdict(card)))
    frame = 4  # the panel's borders and padding; its text wraps, but a path longer than a line is kept whole
    print_whole(console, Panel(summary, title=f"genaudit {card['genaudit_version']}", expand=False),
                Measurement.get(console, console.options.update_width(10**6), summary).minimum + frame)
    for warning in card.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {shown(warning)}", highlight=False)

    table = Table(title="Diagnostics  ↑ higher better  ↓ lower better  · descriptive", title_justify="left",
                  caption="genaudit explain NAME (or the label): formula, paper, how to read it",
                  caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("", justify="center", no_wrap=True)
    table.add_column("what it means")
    last = None
    for group, metric, value in rows(card):
        if group != last:
            table.add_row(f"[bold]{group}[/]", "", "", "")
            last = group
        warned = caveat(card, metric)
        table.add_row(f" {metric.label}", fmt(value), metric.arrow,
                      metric.short if warned is None else f"[yellow]{shown(warned)}[/]")
    console.print(table)

    diag = card["diagnostics"]
    abl, noise = diag["ablation"]["curve"], diag["noise"]["curve"]
    ordered = diag["selectivity"]["ordered_ablation"]["most_selective_first"]["curve"]["accuracy"]
    curves = Table.grid(padding=(0, 2))
    curves.add_row(f"[bold]ablation[/] 0→{abl['fraction'][-1]:.0%}", f"[cyan]{sparkline(abl['accuracy'])}[/]",
                   readings(abl["accuracy"]))
    curves.add_row("  selective first", f"[cyan]{sparkline(ordered)}[/]", readings(ordered))
    curves.add_row(f"[bold]noise[/] 0→{noise['scale'][-1]:g}σ", f"[cyan]{sparkline(noise['accuracy'])}[/]",
                   readings(noise["accuracy"]))
    hist = diag["selectivity"]["histogram"]["counts"]
    peak = max(hist) or 1
    curves.add_row("[bold]selectivity[/] 0→1", f"[cyan]{sparkline([h / peak for h in hist])}[/]",
                   f"median {diag['selectivity']['median']:.2f}"
                   + (" [dim](units shifted ≥0)[/]" if diag["selectivity"]["shifted_nonnegative"] else ""))
    console.print(Panel(curves, title="Curves (higher and flatter = more robust)", expand=False))

    if "layers" in card:
        # 80 columns hold the headline metrics and the Σ that picks the layer; the JSON, Markdown and HTML have all
        columns = [(k, h) for k, h in layer_columns()
                   if k in ("units", "intra_class_variance_sum") or k in {m.column for m in HEADLINE}]
        layers = Table(title=f"Per layer (★ audited). NSR: regularize {shown(card['regularize_layer']['name'])}, the "
                             "largest Σ intra-class variance", title_justify="left", box=box.SIMPLE_HEAD)
        layers.add_column("layer", no_wrap=True)
        for _, header in columns:
            layers.add_column(stacked(header), justify="right", no_wrap=True, min_width=5)
        for row in card["layers"]:
            mark = " ★" if row["name"] == card["layer"]["name"] else ""
            layers.add_row(shown(row["name"]) + mark, *[str(row[k]) if k == "units" else fmt(row[k]) for k, _ in columns])
        print_whole(console, layers)
    for line in failures or []:
        console.print(f"[bold red]FAIL[/] {shown(line)}")


def readings(curve: list[float], most: int = 6) -> str:
    """At most `most` evenly spaced values of a curve, from its first to its last (the ends its label names)."""
    span = len(curve) - 1
    step = max(1, -(-span // (most - 1)))  # the smallest step that shows at most `most` values
    while span % step:  # and lands on the last one
        step += 1
    return " ".join(f"{a:.2f}" for a in curve[::step])


def comparison(result: dict, console: Console) -> None:
    """Table (one row per model, the selected one highlighted, each model's path last and whole), trend, early
    stopping and selection; each path a user may copy starts a line of its own and is never wrapped."""
    metric = result["rank_by"]
    ranked = BY_NAME[metric["metric"]]
    headline = [m for m in HEADLINE if m.name != ranked.name]
    console.print(f"[bold]Comparison[/] on {shown(result['data']['spec'])} ({result['data']['samples']} samples), "
                  f"ranked by {metric['metric']} ({ranked.label}; {metric['better']} is better)")
    note = ranking_note(result)
    if note:
        console.print(f"[yellow]{shown(note)}[/]")
    folder, names = relative([row["model"] for row in result["models"]])
    if folder:
        console.print(f"models in {shown(folder)}{os.sep}", soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    for header in ("rank", f"{ranked.tag or ranked.name} {ranked.arrow}", "train acc",
                   *[f"{m.tag} {m.arrow}" for m in headline]):
        table.add_column(stacked(header), justify="right", no_wrap=True, min_width=5)
    table.add_column("model", no_wrap=True)
    for i, (row, card, name) in enumerate(zip(result["models"], result["scorecards"], names)):
        style = "bold green" if row["model"] == result["selected"] else None
        table.add_row(str(i + 1), str(row["rank"] or "—"), fmt(row["value"]), fmt(row["clean_accuracy"]),
                      *[fmt(lookup(card, m.path)) for m in headline], shown(name), style=style)
    print_whole(console, table)
    values = [row["value"] for row in result["models"]]
    known = [v for v in values if v is not None]
    if known:
        lo, hi = min(known), max(known)
        console.print(f"trend of {metric['metric']} across the series: [cyan]{sparkline(values, lo, hi)}[/] "
                      f"({lo:.3f} … {hi:.3f})")
    stop = result["early_stopping"]
    console.print(f"[bold]peak[/]: {shown(stop['peak'] or 'none')}", soft_wrap=True)
    console.print(f"[bold]memorization sets in[/]: {shown(stop['memorization_onset'] or 'not detected')}",
                  soft_wrap=True)
    console.print(Padding(f"[dim]{shown(stop['evidence'])}[/]", (0, 0, 0, 2)))
    selection = result["selection"]
    if result["selected"] is None:
        console.print(f"[bold]selected[/]: [yellow]none[/] ({shown(selection['why'])})")
    else:
        console.print(f"[bold]selected[/] (best {metric['metric']}): [green]{shown(result['selected'])}[/]",
                      soft_wrap=True)
        if not selection["significant"]:
            console.print(f"[yellow]not a clear winner[/]: {shown(selection['why'])}")
    for card in result["scorecards"]:
        for warning in card.get("warnings", []):
            console.print(f"[bold yellow]warning[/] ({shown(Path(card['model']['path']).name)}): {shown(warning)}")


def validation(study: dict, console: Console) -> None:
    """Per metric: how well it ranks the models by holdout accuracy, best first (metric names whole)."""
    table = Table(title=f"{len(study['models'])} models: rank correlation with holdout accuracy "
                        "(oriented τ: + = the metric ranks models correctly)", title_justify="left",
                  caption="↑ higher is better, ↓ lower is better, · descriptive", caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("metric", no_wrap=True)
    table.add_column("", justify="center", no_wrap=True)
    for col in ("oriented τ", "Kendall τ", "Spearman ρ", "τ within runs", "runs"):
        table.add_column(stacked(col), justify="right", no_wrap=True)
    for name, c in ranked_correlations(study):
        table.add_row(shown(name), Better(c["better"]).arrow,
                      *[signed(c[k]) for k in ("oriented_kendall", "kendall", "spearman", "within_run_kendall_mean")],
                      str(c["runs"]))
    print_whole(console, table)
