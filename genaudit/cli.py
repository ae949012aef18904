"""The `genaudit` command line: a thin Typer layer over the Python API.

Exit codes: 0 ok, 1 a --fail-under threshold failed, 2 usage or input error (one clear message, no traceback).
"""

from __future__ import annotations

import sys
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console

from genaudit.errors import GenauditError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predict how well a trained classifier generalizes, without a held-out set.")
out = Console()
err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _numbers(text: str | None, what: str, kind: type = float) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise GenauditError(f"{what} takes comma-separated numbers, e.g. 0.5 or 0.5,0.5,0.5 (got '{text}').") from None


def user_errors(fn: Callable) -> Callable:
    """Turn GenauditError into a one-paragraph message and exit code 2; Ctrl-C into exit 130."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GenauditError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: nothing was written.")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def score(
    model: Path = typer.Argument(..., help="Model file: .onnx, TorchScript .pt/.pth/.ts, or torch.export .pt2."),
    data: str = typer.Option(..., "--data", "-d", help="Data: sample | mnist | fashion-mnist | kmnist | cifar10 | "
                             "cifar100 | svhn | path/to/file.npz | path/to/image_folder."),
    layer: Optional[str] = typer.Option(None, help="Feature layer to audit (default: the classifier's input). "
                                        "See `genaudit layers`."),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Use the data's labels when it has them; "
                                "without, accuracy means agreement with the model's own predictions."),
    samples: int = typer.Option(2000, help="Number of samples (stratified, seeded subsample)."),
    seed: int = typer.Option(0, help="Seed for subsampling, ablation orders and noise."),
    split: str = typer.Option("train", help="Split of a named data set (default train: no held-out data needed)."),
    data_dir: Optional[Path] = typer.Option(None, envvar="GENAUDIT_DATA_DIR",
                                            help="Cache folder for named data sets."),
    channels: Optional[int] = typer.Option(None, help="Convert images to 1 (grayscale) or 3 (RGB) channels."),
    resize: Optional[str] = typer.Option(None, help="Resize images to H,W (or one number for square)."),
    mean: Optional[str] = typer.Option(None, help="Normalization mean, one value or one per channel."),
    std: Optional[str] = typer.Option(None, help="Normalization std, one value or one per channel."),
    repeats: int = typer.Option(5, help="Random unit orders averaged in the ablation curve."),
    layers_opt: Optional[str] = typer.Option(None, "--layers", help="Per-layer table of the layer-wise "
                                             "diagnostics: 'all' or comma-separated layer names."),
    probes: int = typer.Option(0, help="Run the input-space probes (noise and augmentation agreement; they "
                               "rerun the whole model) on this many samples. 0 = off."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the JSON scorecard to this file."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Report format on stdout."),
    fail_under: List[str] = typer.Option([], help="METRIC=VALUE: exit 1 if the metric is below VALUE "
                                         "(e.g. ablation.auc=0.6). Repeatable."),
) -> None:
    """Audit one model: terminal report and JSON scorecard."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from genaudit import thresholds
    from genaudit.data import Preprocess
    from genaudit.pipeline import audit

    checks = [thresholds.parse(s) for s in fail_under]
    if channels not in (None, 1, 3):
        raise GenauditError(f"--channels must be 1 or 3 (got {channels}).")
    size = _numbers(resize, "--resize", int)
    preprocess = Preprocess(channels=channels, resize=None if size is None else (size[0], size[-1]),
                            mean=_numbers(mean, "--mean") or (0.0,), std=_numbers(std, "--std") or (1.0,))
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=fmt != Format.table) as bar:
        task = bar.add_task("features (one trunk pass)", total=None)
        card = audit(model, data, layer=layer, use_labels=labels, samples=samples, seed=seed, preprocess=preprocess,
                     data_dir=data_dir, split_name=split, ablation_repeats=repeats, layers=layers_opt,
                     probe_samples=probes,
                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    failed = thresholds.failures(card, checks)
    if json_path is not None:
        card.write(json_path)
    if fmt == Format.json:
        sys.stdout.write(card.to_json())
    elif fmt == Format.markdown:
        from genaudit.render.markdown import report

        sys.stdout.write(report(card, failed))
    else:
        from genaudit.render.terminal import report

        report(card, out, failed)
        out.print("[dim]time: " + " · ".join(f"{k.replace('_', ' ')} {v:.2f}s" for k, v in card.timings.items())
                  + "[/]")
    for line in failed:
        err.print(f"threshold failed: {line}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def layers(
    model: Path = typer.Argument(..., help="Model file."),
    input_shape: Optional[str] = typer.Option(None, help="Per-sample input shape C,H,W (needed for TorchScript, "
                                              "which does not record it)."),
) -> None:
    """List the layers where the model can be cut, with shapes; the default feature layer is marked."""
    from rich.table import Table

    from genaudit.models import identify, open_model
    from genaudit.pipeline import default_cache_dir

    file = identify(model)
    splitter = open_model(file, _numbers(input_shape, "--input-shape", int), default_cache_dir())
    table = Table(title=f"{model} ({file.format}); input {list(splitter.input_shape)}")
    for col in ("layer (use with --layer)", "op", "shape per sample", "units", "default"):
        table.add_column(col)
    for lay in splitter.layers():
        table.add_row(lay.name, lay.op, str(list(lay.shape)), str(lay.units or "?"), "★" if lay.default else "")
    out.print(table)


@app.command()
@user_errors
def explain(metric: Optional[str] = typer.Argument(None, help="Metric name or scorecard path; omit to list.")) -> None:
    """What a metric means, its formula, its paper, and how to read it."""
    from rich.table import Table

    from genaudit.metrics import BY_NAME, METRICS

    if metric is None:
        table = Table(title="Metrics (genaudit explain NAME)")
        for col in ("name", "group", "better", "meaning"):
            table.add_column(col)
        for m in METRICS:
            table.add_row(m.name, m.group, f"{m.arrow} {m.better}", m.meaning)
        out.print(table)
        return
    if metric not in BY_NAME:
        raise GenauditError(f"Unknown metric '{metric}'. Known: {', '.join(m.name for m in METRICS)}.")
    m = BY_NAME[metric]
    better = {"higher": "higher is better", "lower": "lower is better"}.get(m.better, "descriptive (no better side)")
    out.print(f"[bold]{m.label}[/] ({m.name}; scorecard: diagnostics.{m.path} or {m.path})\n"
              f"  group:    {m.group}; {better}\n  meaning:  {m.meaning}\n  formula:  {m.formula}\n"
              f"  source:   {m.source}\n  reading:  {m.reading}", highlight=False)


def main() -> None:
    app()
