"""The `genaudit` command line: a thin Typer layer over the Python API.

Exit codes: 0 ok, 1 a threshold or baseline check failed, 2 usage or input error (one clear message, no
traceback). Defaults come from `[tool.genaudit]` in ./pyproject.toml or ./genaudit.yaml; flags win.
"""

from __future__ import annotations

import signal
import sys
import threading
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Callable, List, Optional

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


# Options shared by `score`, `compare` and `watch`.
Data = Annotated[str, typer.Option("--data", "-d", help="Data: sample | mnist | fashion-mnist | kmnist | cifar10 | "
                                   "cifar100 | svhn | path/to/file.npz | path/to/image_folder.")]
Layer = Annotated[Optional[str], typer.Option(help="Feature layer (default: the classifier's input). "
                                              "See `genaudit layers`.")]
Labels = Annotated[bool, typer.Option("--labels/--no-labels", help="Use the data's labels when it has them; "
                                      "without, accuracy means agreement with the model's own predictions.")]
Samples = Annotated[int, typer.Option(help="Number of samples (stratified, seeded subsample).")]
Seed = Annotated[int, typer.Option(help="Seed for subsampling, ablation orders and noise.")]
Split = Annotated[str, typer.Option(help="Split of a named data set (default train: no held-out data needed).")]
DataDir = Annotated[Optional[Path], typer.Option(envvar="GENAUDIT_DATA_DIR", help="Cache folder for named data sets.")]
Channels = Annotated[Optional[int], typer.Option(help="Convert images to 1 (grayscale) or 3 (RGB) channels.")]
Resize = Annotated[Optional[str], typer.Option(help="Resize images to H,W (or one number for square).")]
Mean = Annotated[Optional[str], typer.Option(help="Normalization mean, one value or one per channel "
                                              "(overrides the preset's).")]
Std = Annotated[Optional[str], typer.Option(help="Normalization std, one value or one per channel "
                                            "(overrides the preset's).")]
Scale = Annotated[Optional[float], typer.Option(help="Multiply raw pixel values by this before normalizing "
                                                "(default 1/255 for 8-bit images: [0,1]).")]
PresetOpt = Annotated[Optional[str], typer.Option("--preprocess", help="Preprocessing preset: unit ([0,1], the "
                                                  "default) | raw (0..255) | center ([-1,1]) | mnist | cifar10 | "
                                                  "imagenet (their mean/std).")]
LayoutOpt = Annotated[Optional[str], typer.Option("--layout", help="How the model takes images: nchw | nhwc "
                                                  "(channels-last, e.g. TensorFlow exports) | flat (vectors). "
                                                  "Default: detected from the model's declared input.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", help="The model output holding the class scores, "
                                                  "by name or index (default: the one named *logit*, else the "
                                                  "first a classification layer produces).")]
Repeats = Annotated[int, typer.Option(help="Random unit orders averaged in the ablation curve.")]
Probes = Annotated[int, typer.Option(help="Run the input-space probes (noise and augmentation agreement; they "
                                     "rerun the whole model) on this many samples. 0 = off.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Report format on stdout.")]
FailUnder = Annotated[List[str], typer.Option(help="METRIC=VALUE: exit 1 if the metric is below VALUE "
                                              "(e.g. ablation=0.6). Repeatable.")]
Html = Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML report here.")]


def _numbers(text: str | None, what: str, kind: type = float) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(v) for v in str(text).split(","))
    except ValueError:
        raise GenauditError(f"{what} takes comma-separated numbers, e.g. 0.5 or 0.5,0.5,0.5 (got '{text}').") from None


def _preprocess(channels: int | None, resize: str | None, mean: str | None, std: str | None,
                preset: str | None = None, scale: float | None = None):
    from genaudit.data import Preprocess

    if channels not in (None, 1, 3):
        raise GenauditError(f"--channels must be 1 or 3 (got {channels}).")
    size = _numbers(resize, "--resize", int)
    return Preprocess.from_preset(preset, channels=channels, resize=None if size is None else (size[0], size[-1]),
                                  mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"), scale=scale)


def _progress(label: str, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True, disable=not enabled)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


_interrupted = []  # set by the Ctrl-C handler below


def _on_ctrl_c(signum, frame) -> None:
    _interrupted.append(signum)
    raise KeyboardInterrupt


def user_errors(fn: Callable) -> Callable:
    """Turn GenauditError into a one-paragraph message and exit code 2; Ctrl-C into exit 130. Any error that
    follows a Ctrl-C is the interrupt too (e.g. an extension module whose import was cut short raises
    ImportError, not KeyboardInterrupt)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            signal.signal(signal.SIGINT, _on_ctrl_c)
        try:
            return fn(*args, **kwargs)
        except GenauditError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except (KeyboardInterrupt, Exception):
            if not _interrupted:
                raise
            err.print("interrupted: outputs are written whole or not at all; none is half-written.")
            raise typer.Exit(130) from None

    return wrapper


def _finish(failed: list[str]) -> None:
    for line in failed:
        err.print(f"check failed: {line}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def score(
    model: Annotated[Path, typer.Argument(help="Model file: .onnx, TorchScript .pt/.pth/.ts, or torch.export .pt2.")],
    data: Data,
    layer: Layer = None,
    labels: Labels = True,
    samples: Samples = 2000,
    seed: Seed = 0,
    split: Split = "train",
    data_dir: DataDir = None,
    channels: Channels = None,
    resize: Resize = None,
    mean: Mean = None,
    std: Std = None,
    preset: PresetOpt = None,
    scale: Scale = None,
    layout: LayoutOpt = None,
    output: OutputOpt = None,
    repeats: Repeats = 5,
    layers_opt: Annotated[Optional[str], typer.Option("--layers", help="Per-layer table of the layer-wise "
                                                      "diagnostics: 'all' or comma-separated layer names.")] = None,
    probes: Probes = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the JSON scorecard here.")] = None,
    html: Html = None,
    fmt: FormatOpt = Format.table,
    fail_under: FailUnder = [],  # noqa: B006 (Typer reads the default)
    fail_if_worse_than: Annotated[Optional[Path], typer.Option(help="Baseline scorecard JSON: exit 1 if the "
                                                               "primary metric drops by more than --tolerance.")] = None,
    tolerance: Annotated[float, typer.Option(help="Allowed drop against the baseline.")] = 0.01,
) -> None:
    """Audit one model: terminal report and JSON scorecard."""
    from genaudit import thresholds
    from genaudit.pipeline import audit

    checks = [thresholds.parse(s) for s in fail_under]
    baseline = None if fail_if_worse_than is None else thresholds.load_baseline(fail_if_worse_than)
    bar, progress = _progress("features (one trunk pass)", fmt == Format.table)
    with bar:
        card = audit(model, data, layer=layer, use_labels=labels, samples=samples, seed=seed, layout=layout,
                     output=output, preprocess=_preprocess(channels, resize, mean, std, preset, scale),
                     data_dir=data_dir, split_name=split,
                     ablation_repeats=repeats, layers=layers_opt, probe_samples=probes, progress=progress)
    failed = thresholds.failures(card, checks) + thresholds.regressions(card, baseline, tolerance)
    if json_path is not None:
        card.write(json_path)
    if html is not None:
        from genaudit.render.html import score_page
        from genaudit.files import write_atomic

        write_atomic(html, score_page(card))
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
    _finish(failed)


@app.command()
@user_errors
def compare(
    models: Annotated[List[str], typer.Argument(help="Model files, globs or folders (checkpoints of a run, or a "
                                                "sweep).")],
    data: Data,
    order: Annotated[str, typer.Option(help="natural: by the numbers in the file names (epoch/step); given: as "
                                       "listed.")] = "natural",
    rank_by: Annotated[Optional[str], typer.Option(help="Metric that ranks the models (default: the primary "
                                                   "metric).")] = None,
    select: Annotated[Optional[str], typer.Option(help="'best': print only the selected model's path (it is "
                                                  "always in the JSON as 'selected').")] = None,
    jobs: Annotated[int, typer.Option(help="Audit in this many parallel processes.")] = 1,
    layer: Layer = None,
    labels: Labels = True,
    samples: Samples = 2000,
    seed: Seed = 0,
    split: Split = "train",
    data_dir: DataDir = None,
    channels: Channels = None,
    resize: Resize = None,
    mean: Mean = None,
    std: Std = None,
    preset: PresetOpt = None,
    scale: Scale = None,
    layout: LayoutOpt = None,
    output: OutputOpt = None,
    repeats: Repeats = 5,
    probes: Probes = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the comparison (all scorecards) "
                                                      "here.")] = None,
    html: Html = None,
    fmt: FormatOpt = Format.table,
    fail_under: FailUnder = [],  # noqa: B006
) -> None:
    """Audit a series of models on the same samples: table, trend, ranking, early-stopping point, selection."""
    from genaudit import thresholds
    from genaudit.comparison import compare as run_compare
    from genaudit.metrics import PRIMARY
    from genaudit.files import write_atomic
    from genaudit.scorecard import to_json

    if select not in (None, "best"):
        raise GenauditError(f"--select takes 'best' (got '{select}').")
    checks = [thresholds.parse(s) for s in fail_under]
    bar, progress = _progress("models audited", fmt == Format.table)
    with bar:
        result = run_compare(models, data, order=order, rank_by=rank_by or PRIMARY, samples=samples,
                             split_name=split, data_dir=data_dir,
                             preprocess=_preprocess(channels, resize, mean, std, preset, scale), jobs=jobs,
                             progress=progress, layer=layer, use_labels=labels, seed=seed, layout=layout, output=output,
                             ablation_repeats=repeats, probe_samples=probes)
    failed = [f"{card['model']['path']}: {line}" for card in result["scorecards"]
              for line in thresholds.failures(card, checks)]
    if json_path is not None:
        write_atomic(json_path, to_json(result))
    if html is not None:
        from genaudit.render.html import compare_page

        write_atomic(html, compare_page(result))
    if select == "best" and fmt == Format.table:
        sys.stdout.write(f"{result['selected']}\n")  # the chosen model alone, for scripts
    elif fmt == Format.json:
        sys.stdout.write(to_json(result))
    elif fmt == Format.markdown:
        from genaudit.render.markdown import comparison

        sys.stdout.write(comparison(result))
    else:
        from genaudit.render.terminal import comparison

        comparison(result, out)
    _finish(failed)


@app.command()
@user_errors
def watch(
    folder: Annotated[Path, typer.Argument(help="Folder a training job writes checkpoints into.")],
    data: Data,
    interval: Annotated[float, typer.Option(help="Seconds between looks at the folder.")] = 30.0,
    polls: Annotated[int, typer.Option(help="Stop after this many looks (0 = until Ctrl-C).")] = 0,
    labels: Labels = True,
    samples: Samples = 2000,
    seed: Seed = 0,
    split: Split = "train",
    data_dir: DataDir = None,
    channels: Channels = None,
    resize: Resize = None,
    mean: Mean = None,
    std: Std = None,
    preset: PresetOpt = None,
    scale: Scale = None,
    layout: LayoutOpt = None,
    output: OutputOpt = None,
) -> None:
    """Re-audit as new checkpoints appear, beside a running training job: trend and early-stopping advice."""
    from genaudit.comparison import Watcher
    from genaudit.render.terminal import comparison

    if not folder.is_dir():
        raise GenauditError(f"{folder} is not a folder. Point watch at the folder the checkpoints are written to.")
    watcher = Watcher(folder, data, samples=samples, split_name=split, data_dir=data_dir,
                      preprocess=_preprocess(channels, resize, mean, std, preset, scale), use_labels=labels, seed=seed,
                      layout=layout, output=output)
    try:
        for result in watcher.poll(interval, polls):
            if result is not None:
                comparison(result, out)
    except KeyboardInterrupt:
        err.print("stopped watching.")


@app.command()
@user_errors
def validate(
    models: Annotated[List[str], typer.Argument(help="Model files, globs or folders with known holdout behaviour.")],
    data: Data,
    holdout: Annotated[str, typer.Option(help="Labelled held-out data (same kinds of spec as --data).")],
    runs: Annotated[Optional[Path], typer.Option(help="JSON list of {file, run} (e.g. a zoo manifest) grouping "
                                                 "checkpoints into training runs; default: file name minus "
                                                 "epoch number.")] = None,
    labels: Labels = True,
    samples: Samples = 2000,
    seed: Seed = 0,
    data_dir: DataDir = None,
    channels: Channels = None,
    resize: Resize = None,
    mean: Mean = None,
    std: Std = None,
    preset: PresetOpt = None,
    scale: Scale = None,
    layout: LayoutOpt = None,
    output: OutputOpt = None,
    probes: Probes = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the study (JSON) here.")] = None,
    html: Html = None,
) -> None:
    """How well does each diagnostic rank these models by their true holdout accuracy? Kendall tau and
    Spearman rho, overall and within each training run."""
    import json

    from rich.table import Table

    from genaudit.files import write_atomic
    from genaudit.scorecard import to_json
    from genaudit.validation import validate as run_validate

    run_map = None
    if runs is not None:
        try:
            run_map = {str(e["file"]): str(e["run"]) for e in json.loads(runs.read_text())}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GenauditError(f"--runs {runs}: expected a JSON list of {{file, run}} entries ({exc}).") from None
    bar, progress = _progress("models audited + holdout", True)
    with bar:
        study = run_validate(models, data, holdout, samples=samples, data_dir=data_dir, runs=run_map,
                             preprocess=_preprocess(channels, resize, mean, std, preset, scale), progress=progress,
                             use_labels=labels, seed=seed, layout=layout, output=output, probe_samples=probes)
    if json_path is not None:
        write_atomic(json_path, to_json(study))
    if html is not None:
        from genaudit.render.html import validation_page

        write_atomic(html, validation_page(study))
    table = Table(title=f"{len(study['models'])} models: rank correlation with holdout accuracy "
                        "(oriented τ: + = the metric ranks models correctly)", title_justify="left")
    for col in ("metric", "better", "oriented τ", "Kendall τ", "Spearman ρ", "mean τ within runs", "runs"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    f = lambda v: "—" if v is None else f"{v:+.3f}"  # noqa: E731
    for name, c in sorted(study["correlations"].items(), key=lambda kv: -(kv[1]["oriented_kendall"] or -9)):
        table.add_row(name, c["better"] or "·", f(c["oriented_kendall"]), f(c["kendall"]), f(c["spearman"]),
                      f(c["within_run_kendall_mean"]), str(c["runs"]))
    out.print(table)


@app.command()
@user_errors
def layers(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    input_shape: Annotated[Optional[str], typer.Option(help="Per-sample input shape C,H,W (needed for "
                                                       "TorchScript, which does not record it).")] = None,
    output: OutputOpt = None,
) -> None:
    """List the layers where the model can be cut, with shapes; the default feature layer is marked."""
    from rich.table import Table

    from genaudit.models import identify, open_model
    from genaudit.files import model_cache_dir

    file = identify(model)
    splitter = open_model(file, _numbers(input_shape, "--input-shape", int), model_cache_dir(), output=output)
    outputs = (f"; output '{splitter.output_name}' ({splitter.output_index} of {len(splitter.output_names)}: "
               "--output to choose)" if len(splitter.output_names) > 1 else "")
    table = Table(title=f"{model} ({file.format}); input {list(splitter.input_shape)}{outputs}")
    for col in ("layer (use with --layer)", "op", "shape per sample", "units", "default"):
        table.add_column(col)
    for lay in splitter.layers():
        table.add_row(lay.name, lay.op, str(list(lay.shape)), str(lay.units or "?"), "★" if lay.default else "")
    out.print(table)


@app.command()
@user_errors
def explain(metric: Annotated[Optional[str], typer.Argument(help="Metric name or scorecard path; omit to "
                                                            "list.")] = None) -> None:
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
    from genaudit.config import default_map

    try:
        defaults = default_map(Path.cwd())
    except GenauditError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(2) from None
    app(default_map=defaults)
