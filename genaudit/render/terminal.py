"""The rich terminal report: summary panel, diagnostics table, inline curves."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from genaudit.render import HEADLINE, sparkline, verdict
from genaudit.scorecard import lookup


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def report(card: dict, console: Console, failures: list[str] | None = None) -> None:
    model, layer, data = card["model"], card["layer"], card["data"]
    label_mode = ("true labels" if card["label_mode"] == "labels"
                  else "model's own predictions (no labels: accuracy = agreement with the clean model)")
    summary = Table.grid(padding=(0, 2))
    summary.add_row("[bold]model[/]", f"{model['path']}  [dim]{model['format']}, sha256 {model['sha256'][:12]}…[/]")
    summary.add_row("[bold]layer[/]", f"{layer['name']}  [dim]{layer['op']}, shape {layer['shape']}, "
                                      f"{layer['units']} units{', default' if layer['default'] else ''}[/]")
    summary.add_row("[bold]data[/]", f"{data['spec']} ({data['split']} split), {card['samples']} samples, "
                                     f"seed {card['seed']}")
    summary.add_row("[bold]reference[/]", label_mode)
    summary.add_row("[bold]verdict[/]", verdict(card))
    console.print(Panel(summary, title=f"genaudit {card['genaudit_version']}", expand=False))

    table = Table(title="Diagnostics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("better", justify="center")
    table.add_column("what it means")
    for metric in HEADLINE:
        arrow = {"higher": "↑", "lower": "↓"}.get(metric.better, "·")
        table.add_row(metric.label, _fmt(lookup(card, metric.path)), arrow, metric.meaning)
    console.print(table)

    diag = card["diagnostics"]
    abl, noise = diag["ablation"]["curve"], diag["noise"]["curve"]
    curves = Table.grid(padding=(0, 2))
    curves.add_row("[bold]ablation[/] acc vs fraction ablated 0→1", f"[cyan]{sparkline(abl['accuracy'])}[/]",
                   " ".join(f"{a:.2f}" for a in abl["accuracy"][::5]))
    curves.add_row(f"[bold]noise[/] acc vs noise 0→{noise['scale'][-1]:g}σ", f"[cyan]{sparkline(noise['accuracy'])}[/]",
                   " ".join(f"{a:.2f}" for a in noise["accuracy"][::2]))
    hist = diag["selectivity"]["histogram"]["counts"]
    peak = max(hist) or 1
    curves.add_row("[bold]selectivity[/] histogram 0→1", f"[cyan]{sparkline([h / peak for h in hist])}[/]",
                   f"median {diag['selectivity']['median']:.2f}"
                   + (" [dim](units shifted ≥0)[/]" if diag["selectivity"]["shifted_nonnegative"] else ""))
    console.print(Panel(curves, title="Curves (higher and flatter = more robust)", expand=False))
    for line in failures or []:
        console.print(f"[bold red]FAIL[/] {line}")
