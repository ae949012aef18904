"""Markdown report, e.g. for a pull-request comment."""

from __future__ import annotations

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
from genaudit.render.escape import markdown_code as code
from genaudit.render.escape import markdown_text as text
from genaudit.render.interface import Renderer


class MarkdownRenderer(Renderer):
    """Markdown for pull-request comments and job summaries."""

    name = "markdown"

    def report(self, card: dict, failures: list[str] | None = None) -> None:
        self.stream.write(report(card, failures))

    def comparison(self, result: dict) -> None:
        self.stream.write(comparison(result))

    def validation(self, study: dict) -> None:
        self.stream.write(validation(study))

    def suspects(self, result: dict) -> None:
        lines = [f"### genaudit suspects: {code(result['model']['path'])}{earlier_checkpoints(result)}", "",
                 *[f"> **warning:** {text(w)}\n" for w in result.get("warnings", [])],
                 suspects_summary(result) + ".", "",
                 "| # | " + " | ".join(SUSPECT_COLUMNS) + " |", "|---:|" + "---:|" * len(SUSPECT_COLUMNS)]
        lines += ["| " + " | ".join(text(c) for c in cells) + " |" for cells in suspect_rows(result)]
        self.stream.write("\n".join(lines) + "\n")


def report(card: dict, failures: list[str] | None = None) -> str:
    model, layer = card["model"], card["layer"]
    lines = [
        f"### genaudit: {code(model['path'])}",
        "",
        f"- **layer** {code(layer['name'])} ({layer['units']} units) · **data** {text(card['data']['spec'])} "
        f"({card['samples']} samples{trained_note(card)}{head_samples_note(card)}, {card['label_mode']}) · "
        f"**verdict** {text(verdict(card))}",
        *[f"\n> **warning:** {text(w)}" for w in card.get("warnings", [])],
        "",
        "| group | metric | value | better | meaning |",
        "|---|---|---:|:---:|---|",
    ]
    for group, m, value in rows(card):
        warned = caveat(card, m)
        lines.append(f"| {group} | {m.label} | {fmt(value)} | {m.arrow} | {m.meaning}"
                     + ("" if warned is None else f" **{warned}**") + " |")
    curve = card["diagnostics"]["ablation"]["curve"]["accuracy"]
    lines += ["", f"Ablation curve: `{sparkline(curve)}`"]
    if "layers" in card:
        lines += ["", "| layer | " + " | ".join(h for _, h in layer_columns()) + " |",
                  "|---|" + "---:|" * len(layer_columns())]
        lines += [f"| {code(r['name'])} | " + " | ".join(str(r[k]) if k == "units" else fmt(r[k])
                                                     for k, _ in layer_columns()) + " |" for r in card["layers"]]
    lines += [f"- ❌ {text(line)}" for line in failures or []]
    return "\n".join(lines) + "\n"


def comparison(result: dict) -> str:
    metric = result["rank_by"]
    note = ranking_note(result)
    lines = [f"### genaudit compare: ranked by {text(metric['metric'])} ({metric['better']} is better)", "",
             *([f"> {text(note)}", ""] if note else []),
             "| # | model | rank | value | train acc | CKA to previous |", "|---:|---|---:|---:|---:|---:|"]
    for i, row in enumerate(result["models"]):
        name = f"**{code(row['model'])}**" if row["model"] == result["selected"] else code(row["model"])
        prev = row["drift"]["previous"]
        lines.append(f"| {i + 1} | {name} | {row['rank'] or '—'} | {fmt(row['value'])} | "
                     f"{fmt(row['clean_accuracy'])} | {fmt(prev['cka']) if prev else '—'} |")
    stop = result["early_stopping"]
    tie = result["selection"]
    if result["selected"] is None:
        selected = f"none ({text(tie['why'])})"
    else:
        selected = code(result["selected"]) + ("" if tie["significant"] else
                                               f" (not a clear winner: {text(tie['why'])})")
    lines += ["", f"- **selected**: {selected}",
              f"- **peak**: {code(stop['peak']) if stop['peak'] else 'none'}",
              f"- **memorization sets in**: {text(stop['memorization_onset'] or 'not detected')} "
              f"({text(stop['evidence'])})"]
    lines += [f"- **warning** ({code(card['model']['path'])}): {text(w)}" for card in result["scorecards"]
              for w in card.get("warnings", [])]
    return "\n".join(lines + not_audited(result)) + "\n"


def validation(study: dict) -> str:
    lines = [f"### genaudit validate: {len(study['models'])} models, rank correlation with holdout accuracy", "",
             "| metric | better | oriented τ | Kendall τ | Spearman ρ | mean τ within runs | runs |",
             "|---|:---:|---:|---:|---:|---:|---:|"]
    for name, c in ranked_correlations(study):
        lines.append(f"| {text(name)} | {c['better'] or '·'} | {signed(c['oriented_kendall'])} | {signed(c['kendall'])} | "
                     f"{signed(c['spearman'])} | {signed(c['within_run_kendall_mean'])} | {c['runs']} |")
    return "\n".join(lines + ([""] if study.get("failed") else []) + not_audited(study)) + "\n"


def not_audited(document: dict) -> list[str]:
    """The models of a comparison or study that could not be audited, with why."""
    return [f"- ❌ **not audited** {code(f['model'])}: {text(f['error'])}" for f in document.get("failed", [])]
