"""The rich terminal report: summary panel, grouped diagnostics table, inline curves, per-layer table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from genaudit.render import LAYER_COLUMNS, fmt, rows, sparkline, verdict
from genaudit.scorecard import lookup


def report(card: dict, console: Console, failures: list[str] | None = None) -> None:
    model, layer, data = card["model"], card["layer"], card["data"]
    label_mode = ("true labels" if card["label_mode"] == "labels"
                  else "model's own predictions (no labels: accuracy = agreement with the clean model)")
    summary = Table.grid(padding=(0, 2))
    summary.add_row("[bold]model[/]", f"{model['path']}  [dim]{model['format']}, sha256 {model['sha256'][:12]}…[/]")
    summary.add_row("[bold]layer[/]", f"{layer['name']}  [dim]{layer['op']}, shape {layer['shape']}, "
                                      f"{layer['units']} units{', default' if layer['default'] else ''}[/]")
    output = model.get("output", {})
    outputs = (f", output '{output['name']}' ({output['index']} of {output['of']}; --output to choose)"
               if output.get("of", 1) > 1 else "")
    summary.add_row("[bold]input[/]", f"{model['input_shape']} per sample, fed {model.get('input_layout')}  "
                                      f"[dim]{model['output_kind']}{outputs}[/]")
    summary.add_row("[bold]data[/]", f"{data['spec']} ({data['split']} split), {card['samples']} samples, "
                                     f"seed {card['seed']}")
    summary.add_row("[bold]reference[/]", label_mode)
    summary.add_row("[bold]verdict[/]", verdict(card))
    console.print(Panel(summary, title=f"genaudit {card['genaudit_version']}", expand=False))
    for warning in card.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)

    table = Table(title="Diagnostics  (↑ higher is better, ↓ lower is better, · descriptive; "
                        "`genaudit explain NAME` for more)", title_justify="left")
    for col, kw in (("group", {"style": "dim"}), ("metric (name)", {}), ("value", {"justify": "right"}),
                    ("", {"justify": "center"}), ("what it means", {})):
        table.add_column(col, **kw)
    last = None
    for group, metric, value in rows(card):
        table.add_row(group if group != last else "", f"{metric.label} [dim]({metric.name})[/]", fmt(value),
                      metric.arrow, metric.meaning)
        last = group
    console.print(table)

    diag = card["diagnostics"]
    abl, noise = diag["ablation"]["curve"], diag["noise"]["curve"]
    ordered = diag["selectivity"]["ordered_ablation"]["most_selective_first"]["curve"]["accuracy"]
    curves = Table.grid(padding=(0, 2))
    curves.add_row("[bold]ablation[/], random order, 0→100% units", f"[cyan]{sparkline(abl['accuracy'])}[/]",
                   " ".join(f"{a:.2f}" for a in abl["accuracy"][::5]))
    curves.add_row("[bold]ablation[/], most selective first", f"[cyan]{sparkline(ordered)}[/]",
                   " ".join(f"{a:.2f}" for a in ordered[::5]))
    curves.add_row(f"[bold]noise[/] 0→{noise['scale'][-1]:g}σ per unit", f"[cyan]{sparkline(noise['accuracy'])}[/]",
                   " ".join(f"{a:.2f}" for a in noise["accuracy"][::2]))
    hist = diag["selectivity"]["histogram"]["counts"]
    peak = max(hist) or 1
    curves.add_row("[bold]selectivity[/] histogram 0→1", f"[cyan]{sparkline([h / peak for h in hist])}[/]",
                   f"median {diag['selectivity']['median']:.2f}"
                   + (" [dim](units shifted ≥0)[/]" if diag["selectivity"]["shifted_nonnegative"] else ""))
    console.print(Panel(curves, title="Curves (higher and flatter = more robust)", expand=False))

    if "layers" in card:
        layers = Table(title=f"Per layer  (NSR: regularize [bold]{card['regularize_layer']['name']}[/], "
                             "the largest aggregated intra-class variance)", title_justify="left")
        layers.add_column("layer")
        layers.add_column("op", style="dim")
        for _, header in LAYER_COLUMNS:
            layers.add_column(header, justify="right")
        for row in card["layers"]:
            mark = " ★" if row["name"] == card["layer"]["name"] else ""
            layers.add_row(row["name"] + mark, row["op"],
                           *[str(row[k]) if k == "units" else fmt(row[k]) for k, _ in LAYER_COLUMNS])
        console.print(layers)
    for line in failures or []:
        console.print(f"[bold red]FAIL[/] {line}")


def comparison(result: dict, console: Console) -> None:
    """Table (one row per model, best highlighted), trend chart, ranking, early stopping and selection."""
    metric = result["rank_by"]
    headline = [("ablation", "ablation.auc"), ("noise", "noise.auc"), ("consistency", "consistency.value"),
                ("steadiness", "steadiness.ratio"), ("nodes", "nodes.accuracy")]
    table = Table(title=f"Comparison on {result['data']['spec']} ({result['data']['samples']} samples); "
                        f"ranked by {metric['metric']} ({metric['better']} is better)", title_justify="left")
    for col in ("#", "model", "rank", "train acc", *[name for name, _ in headline], "CKA prev", "CKA final"):
        if col == "model":
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for i, (row, card) in enumerate(zip(result["models"], result["scorecards"])):
        style = "bold green" if row["model"] == result["selected"] else None
        drift = row["drift"]
        table.add_row(str(i + 1), Path(row["model"]).name, str(row["rank"] or "—"), fmt(row["clean_accuracy"]),
                      *[fmt(lookup(card, path)) for _, path in headline],
                      fmt(drift["previous"]["cka"]) if drift["previous"] else "—", fmt(drift["final"]["cka"]),
                      style=style)
    console.print(table)
    values = [row["value"] for row in result["models"]]
    known = [v for v in values if v is not None]
    if known:
        lo, hi = min(known), max(known)
        console.print(f"trend of {metric['metric']} across the series: [cyan]{sparkline(values, lo, hi)}[/] "
                      f"({lo:.3f} … {hi:.3f})")
    stop = result["early_stopping"]
    console.print(f"[bold]peak[/]: {stop['peak']}   [bold]memorization sets in[/]: "
                  f"{stop['memorization_onset'] or 'not detected'}   [dim]({stop['evidence']})[/]")
    console.print(f"[bold]selected[/] (best {metric['metric']}): [green]{result['selected']}[/]")
    for card in result["scorecards"]:
        for warning in card.get("warnings", []):
            console.print(f"[bold yellow]warning[/] ({Path(card['model']['path']).name}): {warning}", highlight=False)
