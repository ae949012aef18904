"""Markdown report, e.g. for a pull-request comment."""

from __future__ import annotations

from genaudit.render import HEADLINE, sparkline, verdict
from genaudit.scorecard import lookup


def report(card: dict, failures: list[str] | None = None) -> str:
    model, layer = card["model"], card["layer"]
    lines = [
        f"### genaudit: `{model['path']}`",
        "",
        f"- **layer** `{layer['name']}` ({layer['units']} units) · **data** {card['data']['spec']} "
        f"({card['samples']} samples, {card['label_mode']}) · **verdict** {verdict(card)}",
        "",
        "| metric | value | better | meaning |",
        "|---|---:|:---:|---|",
    ]
    for m in HEADLINE:
        value = lookup(card, m.path)
        lines.append(f"| {m.label} | {'—' if value is None else f'{value:.3f}'} | "
                     f"{ {'higher': '↑', 'lower': '↓'}.get(m.better, '·') } | {m.meaning} |")
    curve = card["diagnostics"]["ablation"]["curve"]["accuracy"]
    lines += ["", f"Ablation curve: `{sparkline(curve)}`"]
    lines += [f"- ❌ {line}" for line in failures or []]
    return "\n".join(lines) + "\n"
