"""The `genaudit` command line: a thin Typer layer over the Python API.

Exit codes: 0 ok, 1 a threshold or baseline check failed, 2 usage or input error (one clear message, no
traceback). Defaults come from one configuration file ($GENAUDIT_CONFIG, else ./genaudit.yaml, else
`[tool.genaudit]` in ./pyproject.toml; see genaudit.config); flags win. Every numeric option is parsed against
its declared Range (command-specific ones here, the shared ones in genaudit.options).
"""

from __future__ import annotations

import inspect
import math
import re
import signal
import sys
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from enum import Enum
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Callable, List, Optional

from genaudit.threads import one_blas_thread_at_start

one_blas_thread_at_start()  # before numpy loads (genaudit.models imports it)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from genaudit.errors import GenauditError  # noqa: E402
from genaudit.models import formats_read  # noqa: E402 (no heavy library: onnx, onnxruntime, torch load where used)
from genaudit.options import Range  # noqa: E402
from genaudit.render import FORMATS, SUSPECT_COLUMNS  # noqa: E402
from genaudit.render.escape import csv_cell, terminal_text  # noqa: E402

if TYPE_CHECKING:
    from genaudit.thresholds import Threshold

out = Console()
err = Console(stderr=True)


def _error(message: object) -> None:
    """Print a user error in genaudit's one style: `error: ` and the message on the first line, never
    hard-wrapped (paths and commands in it stay whole for copying; the terminal wraps what it must)."""
    err.print(f"[bold red]error:[/] {terminal_text(message, keep_newlines=True)}", highlight=False, soft_wrap=True)


def _done(what: str) -> None:
    """One line on stderr saying where an output went (stdout stays the report's, e.g. for `-f json`)."""
    err.print(terminal_text(what), highlight=False, soft_wrap=True)


# Click's exception for a bad command line, from wherever this Typer takes click (Typer 0.29 bundles its own)
ClickError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class Commands(TyperGroup):
    """genaudit's commands; a usage error (an unknown option, a bad value, a missing argument) is printed in the
    style of every other error, `error: ...` first, then the usage and where the help is; exit 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Click's main, with genaudit's error style when it runs as the program (standalone)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `genaudit` alone: the help
                exc.show()
                sys.exit(exc.exit_code)
            _error(exc.format_message())
            context = getattr(exc, "ctx", None)
            if context is not None:
                err.print(terminal_text(context.get_usage()), highlight=False, soft_wrap=True)
                err.print(terminal_text(f"Try '{context.command_path} --help' for help."), highlight=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# Help as plain text (no Rich markup: the extras in install hints such as 'genaudit[mlflow]' stay as written),
# readable at 80 columns: each option's description wraps beside it, long option names get a line of their own.
app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Predict how well a trained classifier generalizes, without a held-out set.")


def _version(value: bool) -> None:
    if value:
        from genaudit.scorecard import SCHEMA_VERSION
        from genaudit.version import __version__

        out.print(f"genaudit {__version__} (scorecard schema {SCHEMA_VERSION})", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                                help="Print genaudit's version and exit.")] = False) -> None:
    """Predict how well a trained classifier generalizes, without a held-out set."""


Format = Enum("Format", {name: name for name in FORMATS}, type=str)  # --format: one member per renderer


@dataclass(frozen=True)
class Bounded:
    """Typer's parser for a numeric option: the value (as typed, or from the config file) converted and checked
    against the option's declared `Range`; a bad value is a usage error naming the option (exit 2), before any
    work."""

    bounds: Range

    def __call__(self, value: Any) -> Any:
        try:
            return self.bounds.convert(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None


@dataclass(frozen=True)
class Gate:
    """Typer's parser for --fail-under / --fail-if: the text parsed into its Threshold (by `how`: the name of a
    parser in genaudit.thresholds), whose bound must be finite (a NaN bound never fails, an infinite one always
    does)."""

    how: str

    def __call__(self, text: Any) -> Threshold:
        from genaudit import thresholds

        try:
            threshold = getattr(thresholds, self.how)(str(text))
        except GenauditError as exc:
            raise typer.BadParameter(str(exc)) from None
        if not math.isfinite(threshold.bound):
            raise typer.BadParameter(f"the value must be a finite number (got '{text}'): a NaN bound never fails "
                                     "and an infinite one always does")
        return threshold


Data = Annotated[str, typer.Option("--data", "-d", help="Data: sample | mnist | fashion-mnist | kmnist | cifar10 | "
                                   "cifar100 | svhn | path/to/file.npz | path/to/image_folder.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", help="The model output holding the class scores, "
                                                  "by name or index (default: the one named *logit*, else the "
                                                  "first a classification layer produces).")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Report format on stdout.")]
FailUnder = Annotated[List[Any], typer.Option(metavar="METRIC=VALUE", parser=Gate("parse"),  # -> Thresholds
                                              help="Exit 1 if the metric is worse than VALUE: below it when higher "
                                              "is better (ablation=0.6), above it when lower is better "
                                              "(consistency=1.5). Repeatable.")]
FailIf = Annotated[List[Any], typer.Option(metavar="METRIC<VALUE", parser=Gate("parse_condition"),  # -> Thresholds
                                           help="Exit 1 if the comparison holds, e.g. 'perplexity>0.9' or "
                                           "'estimate<0.8' (any metric). Repeatable.")]
Html = Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML report here.")]
Json = Annotated[Optional[Path], typer.Option("--json", help="Also write the JSON document here.")]
Mlflow = Annotated[bool, typer.Option("--mlflow", metavar="", help="Record the numbers as metrics and the JSON/HTML "
                                      "reports as artifacts in MLflow (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; "
                                      "needs pip install 'genaudit[mlflow]').")]


def with_options(run: bool = False) -> Callable[[Callable], Callable]:
    """Give a command every data and audit option (and with `run`, the options of where a series of audits runs),
    declared once in `genaudit.options` (the same names as the Python API's keywords): the command's parameter
    `options` is replaced by one command-line option per field, and the command receives their values as the dict
    `options`, ready for `genaudit.audit(..., **options)`."""
    from typing import get_type_hints

    from genaudit.options import GROUPS, RunOptions, cli_fields

    def decorate(fn: Callable) -> Callable:
        names, added = [], []
        for cls in GROUPS + ((RunOptions,) if run else ()):
            hints = get_type_hints(cls)
            for f in cli_fields(cls):
                flags = f.metadata["flags"] or (f"--{f.name.replace('_', '-')}",)
                kind = f.metadata["cli"] or hints[f.name]
                bounds = f.metadata["bounds"]
                option = typer.Option(*flags, help=f.metadata["help"], envvar=f.metadata["envvar"],
                                      metavar="" if kind is bool else None,  # a flag takes no value: show none
                                      parser=None if bounds is None else Bounded(bounds))
                names.append(f.name)
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                               annotation=Annotated[kind, option]))
        declared = inspect.signature(fn, eval_str=True)
        own = [p for p in declared.parameters.values() if p.name != "options"]

        @wraps(fn)
        def command(**kwargs):
            options = {name: kwargs.pop(name) for name in names}
            return fn(**kwargs, options=options)

        command.__signature__ = declared.replace(parameters=own + added)
        command.__annotations__ = {p.name: p.annotation for p in own + added}
        return command

    return decorate


def _progress(label: str, enabled: bool):
    """A transient progress bar on stderr, shown only in an interactive terminal (in a CI log or a pipe it would
    leave nothing useful but an empty line); elsewhere nothing, and rich's progress module is not imported."""
    if not (enabled and err.is_interactive):
        return nullcontext(), lambda done, total: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
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
            _error(_for_command(str(exc), fn.__name__))
            raise typer.Exit(2) from None
        except (KeyboardInterrupt, Exception):
            if not _interrupted:
                raise
            err.print("interrupted: outputs are written whole or not at all; none is half-written.")
            raise typer.Exit(130) from None

    return wrapper


_FLAG = re.compile(r"--[a-z][a-z0-9-]*")
# the last clause of a sentence (after ', ' or '; ', up to its full stop) that names an option
_ADVICE = re.compile(r"[,;] (?:(?:[^,;.()]|[,.](?=\S))*)--[a-z](?:[^,;.()]|[,.](?=\S))*(?=\.(?:\s|$))")


def _for_command(message: str, name: str) -> str:
    """A library message without the advice that names an option command `name` does not take: the models'
    messages serve every command (`layers` takes --input-shape; `score` takes the shape from its data)."""
    import typer.main

    command = typer.main.get_command(app).commands[name]
    taken = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
    return _ADVICE.sub(lambda m: m[0] if set(_FLAG.findall(m[0])) <= taken else "", message)


def _finish(failed: list[str], unaudited: list[dict] = ()) -> None:
    """Exit 1 when a check failed; exit 2 when a model of the series could not be audited (the outputs hold the
    others' results and name it under `failed`)."""
    for line in failed:
        err.print(f"check failed: {terminal_text(line)}", highlight=False)
    for entry in unaudited:  # the message names the model unless the error already does
        _error(entry["error"] if entry["model"] in entry["error"] else f"{entry['model']}: {entry['error']}")
    if unaudited:
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(1)


def _write_text(path: Path, text: str) -> None:
    """Write a file atomically and say so on stderr: `wrote PATH`."""
    from genaudit.files import write_atomic

    write_atomic(path, text)
    _done(f"wrote {path}")


def _recorded(run_id: str) -> None:
    """Say on stderr where --mlflow recorded: the run and the tracking store."""
    import mlflow

    _done(f"recorded in MLflow: run {run_id} at {mlflow.get_tracking_uri()}")


def _show(fmt: Format, method: str, *document) -> None:
    """Render a document on stdout in the chosen format."""
    from genaudit.render import renderer

    getattr(renderer(fmt.value, sys.stdout), method)(*document)


def _tracking(mlflow: bool) -> ModuleType | None:
    """genaudit's MLflow integration when --mlflow asks for it (checked to be installed and configured before any
    work), else None."""
    if not mlflow:
        return None
    from genaudit.integrations import mlflow as tracking

    tracking.check_available()
    return tracking


# what records each document in MLflow (genaudit.integrations.mlflow)
_LOGGERS = {"report": "log_scorecard", "comparison": "log_comparison", "validation": "log_validation"}


def _deliver(method: str, run: Callable[[Callable[[int, int], None]], Any], *, label: str, fmt: Format,
             inputs: tuple, json_path: Path | None, html: Path | None, mlflow: bool = False,
             also: dict[str, tuple[Path | None, Callable[[Any], str]]] | None = None) -> Any:
    """A command's delivery of its document (`method`: the Renderer method that renders it), up to showing it:
    the output paths checked against `inputs` and MLflow checked (before any work); `run(progress)` under a
    progress bar named `label`; the document written to each output asked for (`also`: option -> path and the
    document's text, e.g. --csv; then --json and --html) and recorded in MLflow. Returns the document."""
    from genaudit.files import check_outputs
    from genaudit.render import renderer_class

    also = also or {}
    check_outputs({"--json": json_path, "--html": html, **{option: path for option, (path, _) in also.items()}},
                  inputs)
    tracking = _tracking(mlflow)
    bar, progress = _progress(label, fmt == Format.table)
    with bar:
        document = run(progress)
    for path, text in also.values():
        if path is not None:
            _write_text(path, text(document))
    for path, written in ((json_path, "json"), (html, "html")):
        if path is not None:
            _write_text(path, renderer_class(written).text(method, document))
    if tracking is not None:
        _recorded(getattr(tracking, _LOGGERS[method])(document))
    return document


@app.command()
@user_errors
@with_options()
def score(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=f"Model file: {formats_read()}.")],
    data: Data,
    options=None,
    json_path: Json = None,
    html: Html = None,
    fmt: FormatOpt = Format.table,
    fail_under: FailUnder = [],  # noqa: B006 (Typer reads the default)
    fail_if: FailIf = [],  # noqa: B006
    fail_if_worse_than: Annotated[Optional[Path], typer.Option(help="Baseline scorecard JSON: exit 1 if the "
                                                               "primary metric drops by more than --tolerance.")] = None,
    tolerance: Annotated[float, typer.Option(help="Allowed drop of the primary metric (an accuracy) against the "
                                             "baseline, 0 to 1.",
                                             parser=Bounded(Range(low=0.0, high=1.0, whole=False)))] = 0.01,
    mlflow: Mlflow = False,
) -> None:
    """Audit one model: terminal report and JSON scorecard."""
    from genaudit import thresholds
    from genaudit.pipeline import audit

    baseline = None if fail_if_worse_than is None else thresholds.load_baseline(fail_if_worse_than)
    card = _deliver("report", lambda progress: audit(model, data, progress=progress, **options),
                    label="features (one trunk pass)", fmt=fmt, inputs=(model, data, fail_if_worse_than),
                    json_path=json_path, html=html, mlflow=mlflow)
    failed = (thresholds.failures(card, [*fail_under, *fail_if])  # parsed and checked by their Gate
              + thresholds.regressions(card, baseline, tolerance))
    _show(fmt, "report", card, failed)
    _finish(failed)


@app.command()
@user_errors
@with_options(run=True)
def compare(
    models: Annotated[List[str], typer.Argument(metavar="MODEL", help="Model files, globs or folders "
                                                "(checkpoints of a run, or a sweep).")],
    data: Data,
    order: Annotated[str, typer.Option(help="natural: by the numbers in the file names (epoch/step); given: as "
                                       "listed.")] = "natural",
    rank_by: Annotated[Optional[str], typer.Option(help="Metric that ranks the models (default: estimate, the "
                                                   "expected held-out accuracy; without labels, which it needs: "
                                                   "score, the label-free generalization score).")] = None,
    select: Annotated[Optional[str], typer.Option(help="'best': print only the selected model's path (it is "
                                                  "always in the JSON as 'selected'); exit 2 when none can be "
                                                  "selected.")] = None,
    options=None,
    json_path: Json = None,
    html: Html = None,
    fmt: FormatOpt = Format.table,
    fail_under: FailUnder = [],  # noqa: B006
    fail_if: FailIf = [],  # noqa: B006
    mlflow: Mlflow = False,
) -> None:
    """Audit and rank a series of models (checkpoints or a sweep).

    On the same samples: table, trend, ranking, early-stopping point, selection."""
    from genaudit import thresholds
    from genaudit.comparison import compare as run_compare

    if select not in (None, "best"):
        raise GenauditError(f"--select takes 'best' (got '{select}').")
    result = _deliver("comparison", lambda progress: run_compare(models, data, order=order, rank_by=rank_by,
                                                                 progress=progress, **options),
                      label="models audited", fmt=fmt, inputs=(*models, data), json_path=json_path, html=html,
                      mlflow=mlflow)
    failed = [f"{card['model']['path']}: {line}" for card in result["scorecards"]
              for line in thresholds.failures(card, [*fail_under, *fail_if])]  # parsed and checked by their Gate
    if select == "best" and result["selected"] is None:
        raise GenauditError(f"--select best: no model can be selected: {result['selection']['why']}. Rank by a "
                            "metric the models have a value of (--rank-by).")
    if select == "best" and fmt == Format.table:
        sys.stdout.write(f"{result['selected']}\n")  # the chosen model alone, for scripts
    else:
        _show(fmt, "comparison", result)
    _finish(failed, result["failed"])


@app.command()
@user_errors
@with_options()
def watch(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="Folder a training job writes checkpoints "
                                           "into.")],
    data: Data,
    interval: Annotated[float, typer.Option(help="Seconds between looks at the folder (at most a day).",
                                            parser=Bounded(Range(low=0.0, high=86400.0, whole=False)))] = 30.0,
    polls: Annotated[int, typer.Option(help="Stop after this many looks (0 = until Ctrl-C).",
                                       parser=Bounded(Range(low=0)))] = 0,
    options=None,
    fmt: FormatOpt = Format.table,
    mlflow: Mlflow = False,
) -> None:
    """Re-audit a folder as a training job writes checkpoints into it.

    Each new checkpoint updates the comparison: trend and early-stopping advice. What it watches and the
    checkpoints it finds are said on stderr as they appear."""
    from genaudit.comparison import Watcher
    from genaudit.models import SUFFIXES

    if not folder.is_dir():
        raise GenauditError(f"{folder} is not a folder. Point watch at the folder the checkpoints are written to.")
    tracking = _tracking(mlflow)
    watcher = Watcher(folder, data, **options)
    patterns = ", ".join(f"*{suffix}" for suffix in sorted(SUFFIXES))
    _done(f"watching {folder} for checkpoints ({patterns}), a look every {interval:g} s"
          f"{f', up to {polls} look(s)' if polls else '; Ctrl-C to stop'}")
    waiting = False  # said once: no checkpoint yet

    def found(new: list[Path]) -> None:
        nonlocal waiting
        if new:
            _done(f"found {len(new)} new checkpoint(s), {len(watcher.cards) + len(new)} in all: "
                  f"{', '.join(p.name for p in new)}; auditing")
        elif not watcher.cards and not waiting:
            waiting = True
            _done(f"no checkpoint in {folder} yet; waiting for the first")

    logged = 0  # checkpoints already recorded in MLflow (each is recorded once, as it appears)
    try:
        with nullcontext() if tracking is None else tracking.run(f"watch {folder.name}"):
            for result in watcher.poll(interval, polls, found):
                if result is not None:
                    _show(fmt, "comparison", result)
                    if tracking is not None:
                        _recorded(tracking.log_comparison(result, first=logged))
                        logged = len(result["scorecards"])
    except KeyboardInterrupt:
        err.print("stopped watching.")


@app.command()
@user_errors
@with_options(run=True)
def validate(
    models: Annotated[List[str], typer.Argument(metavar="MODEL", help="Model files, globs or folders with "
                                                "known holdout behaviour.")],
    data: Data,
    holdout: Annotated[str, typer.Option(help="Labelled held-out data (same kinds of spec as --data).")],
    runs: Annotated[Optional[Path], typer.Option(help="JSON list of {file, run} (e.g. a zoo manifest) grouping "
                                                 "checkpoints into training runs; default: file name minus "
                                                 "epoch number.")] = None,
    options=None,
    json_path: Json = None,
    html: Html = None,
    fmt: FormatOpt = Format.table,
    mlflow: Mlflow = False,
) -> None:
    """Check how well each diagnostic ranks models by holdout accuracy.

    The rank correlation (Kendall tau, Spearman rho) of each diagnostic with the models' true holdout accuracy,
    overall and within each training run."""
    import json

    from genaudit.validation import validate as run_validate

    run_map = None
    if runs is not None:
        try:
            run_map = {str(e["file"]): str(e["run"]) for e in json.loads(runs.read_text())}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GenauditError(f"--runs {runs}: expected a JSON list of {{file, run}} entries ({exc}).") from None
    study = _deliver("validation", lambda progress: run_validate(models, data, holdout, runs=run_map,
                                                                 progress=progress, **options),
                     label="models audited + holdout", fmt=fmt, inputs=(*models, data, holdout, runs),
                     json_path=json_path, html=html, mlflow=mlflow)
    _show(fmt, "validation", study)
    _finish([], study["failed"])


@app.command()
@user_errors
@with_options()
def suspects(
    models: Annotated[List[str], typer.Argument(metavar="MODEL", help="Model file; or the checkpoints of one "
                                                "training run (files, globs or a folder), judged together.")],
    data: Data,
    order: Annotated[str, typer.Option(help="A run's checkpoints: natural: by the numbers in the file names "
                                       "(epoch/step); given: as listed. The last is the model the table shows."
                                       )] = "natural",
    top: Annotated[int, typer.Option(help="How many of the most suspicious samples to show.",
                                     parser=Bounded(Range(low=1)))] = 20,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write every audited sample's row here "
                                                     f"({', '.join(SUSPECT_COLUMNS)}), most suspicious first.")] = None,
    options=None,
    json_path: Json = None,
    html: Html = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Rank training samples by how likely the model memorized them.

    Suspicion: a label its neighbours outvote, fitted anyway; from the trained model and its data alone. Where the
    neighbours are weak judges (natural images), also the model's doubt of the label on the image shifted 2
    pixels. Given a run's checkpoints, also how much the run doubted each label while it trained (the last
    checkpoint is the model the table shows)."""
    from genaudit.suspects import suspects as run_suspects

    result = _deliver("suspects", lambda progress: run_suspects(models, data, top=top, order=order,
                                                                progress=progress,
                                                                thumbnails=html is not None or fmt == Format.html,
                                                                **options),
                      label="features (one trunk pass per model)", fmt=fmt, inputs=(*models, data),
                      json_path=json_path, html=html, also={"--csv": (csv_path, lambda found: _csv(found["rows"]))})
    _show(fmt, "suspects", result)


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUSPECT_COLUMNS,
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


@app.command()
@user_errors
def layers(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model file.")],
    input_shape: Annotated[Optional[tuple], typer.Option(help="Per-sample input shape C,H,W (needed for "
                                                         "TorchScript, which does not record it).", metavar="C,H,W",
                                                         parser=Bounded(Range(low=1, high=65536, count=(1, 3))))
                           ] = None,
    output: OutputOpt = None,
) -> None:
    """List the layers where the model can be cut (for --layer).

    With each layer's op and shape; the default feature layer is marked. Layer names are shown whole, however
    long."""
    from rich import box
    from rich.table import Table

    from genaudit.files import model_cache_dir
    from genaudit.models import identify, open_model
    from genaudit.render.terminal import print_whole

    file = identify(model)
    graph = open_model(file, input_shape, model_cache_dir(), output=output)
    outputs = (f"; output '{graph.output_name}' ({graph.output_index} of {len(graph.output_names)}: --output to "
               "choose)" if len(graph.output_names) > 1 else "")
    out.print(terminal_text(f"{model} ({file.format}); input {list(graph.input_shape)}{outputs}; ★ the default "
                            "feature layer"), highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)  # the name last: a long one runs on, the rest stays aligned
    for col in ("", "op", "shape per sample", "units", "layer (use with --layer)"):
        table.add_column(col, no_wrap=True)
    for lay in graph.layers():
        table.add_row("★" if lay.default else "", terminal_text(lay.op), str(list(lay.shape)), str(lay.units or "?"),
                      terminal_text(lay.name))
    print_whole(out, table)


@app.command()
@user_errors
def explain(metric: Annotated[Optional[str], typer.Argument(metavar="METRIC", help="Metric name, label or "
                                                            "scorecard path (as this command prints it, or without "
                                                            "'diagnostics.'); omit to list.")] = None) -> None:
    """What a metric means, its formula, its paper, how to read it."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from genaudit.errors import did_you_mean
    from genaudit.metrics import BY_LABEL, BY_NAME, METRICS, TOP_LEVEL, Better

    if metric is None:
        table = Table(title="Metrics (genaudit explain NAME)", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        for col in ("name", "group", ""):
            table.add_column(col, no_wrap=True)
        table.add_column("meaning")  # the one column that wraps: the names keep their width
        for m in METRICS:
            table.add_row(*(escape(text) for text in (m.name, m.group, m.arrow, m.short)))
        out.print(table)
        return
    m = BY_NAME.get(metric.removeprefix("diagnostics.")) or BY_LABEL.get(metric)
    if m is None:
        raise GenauditError(f"Unknown metric '{metric}'.{did_you_mean(metric, [*BY_NAME, *BY_LABEL])} Known: "
                            f"{', '.join(m.name for m in METRICS)}.")
    better = "descriptive (no better side)" if m.better is Better.DESCRIPTIVE else f"{m.better} is better"
    where = m.path if m.name in TOP_LEVEL else f"diagnostics.{m.path}"
    out.print(f"[bold]{escape(m.label)}[/] ({escape(m.name)}; scorecard: {escape(where)})\n"
              f"  group:    {escape(m.group)}; {better}\n  meaning:  {escape(m.meaning)}\n"
              f"  formula:  {escape(m.formula)}\n  source:   {escape(m.source)}\n  reading:  {escape(m.reading)}",
              highlight=False)  # the texts hold brackets (mean_n [...]): shown as written, never read as markup


def configurable(group: Any) -> list[str]:
    """The commands a configuration file may configure: every command of `group` (the app's Click group) that
    takes an option, in the order `--help` lists them; a new command is one of them by declaring its options."""
    return [name for name, command in group.commands.items()
            if any(p.param_type_name == "option" for p in command.params)]


def configured(folder: Path) -> dict:
    """Click's default_map from the configuration file for a run in `folder` (see genaudit.config), checked before
    any work: every key must be an option of a command, and every value is parsed and checked as its flag's
    would be; a bad one is a user error naming the file and the key. When several configuration files are
    present, a notice on stderr names the one read."""
    import typer.main

    from genaudit import config

    found = config.read(folder)
    if found.ignored:
        err.print(terminal_text(f"note: configuration read from {found.path}; not read: {', '.join(map(str, found.ignored))} "
                         "(one file is read: $GENAUDIT_CONFIG, else genaudit.yaml, else [tool.genaudit] in "
                         "pyproject.toml)."), highlight=False, soft_wrap=True)  # one line, however long
    group = typer.main.get_command(app)
    params = {name: {p.name: p for p in group.commands[name].params} for name in configurable(group)}
    defaults = found.default_map({name: set(names) for name, names in params.items()})
    for command, values in defaults.items():
        context = typer.Context(group.commands[command])
        for key, value in values.items():
            param = params[command].get(key)
            if param is None:  # a top-level key for another command
                continue
            try:
                if param.multiple != isinstance(value, list):  # a repeatable option takes a list, others one value
                    raise typer.BadParameter("it takes a list of values" if param.multiple else
                                             "it takes one value, not a list")
                param.process_value(context, value)
            except typer.BadParameter as exc:
                raise GenauditError(f"In {found.path}, '{config.spelling(key)}' (for genaudit {command}) is wrong: "
                                    f"{exc.message.rstrip('.')}. Fix the file.") from None
    return defaults


def main() -> None:
    try:
        defaults = configured(Path.cwd())
    except GenauditError as exc:
        _error(exc)
        raise SystemExit(2) from None
    try:
        app(default_map=defaults)
    finally:
        # The process ends here: its last garbage collection need not walk every object the libraries made (about
        # 0.1 s of a 2,000-sample audit; outputs are written and closed by then, and exit handlers still run).
        import gc

        gc.freeze()
