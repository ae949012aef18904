"""Untrusted input is refused before any work, with one message naming what is wrong, exit 2 and no traceback:
every numeric option out of its declared range (on every command, in the Python API and in a config file),
output paths at the file system's limits, configuration files that are missing, ambiguous, malformed or too
large; and `compare` never calls a pick among copies of one model significant."""

from __future__ import annotations

import errno
import inspect
import os
import re
import shutil
import typing
from dataclasses import fields
from pathlib import Path

import pytest
import typer.main
import yaml
from conftest import SAMPLE_MODELS, assert_user_error
from typer.models import OptionInfo
from typer.testing import CliRunner

import genaudit
from genaudit import cli
from genaudit.backends import run_tasks
from genaudit.cli import Bounded, app
from genaudit.comparison import selection
from genaudit.errors import GenauditError
from genaudit.files import check_outputs, write_atomic
from genaudit.options import AuditOptions, DataOptions, Range, RunOptions, flag
from genaudit.scorecard import load

runner = CliRunner()
MODEL = SAMPLE_MODELS / "mlp_clean.onnx"
OTHER = SAMPLE_MODELS / "mlp_random.onnx"
CLASSES = (DataOptions, AuditOptions, RunOptions)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(result) -> str:
    """A CLI result's output without whitespace and panel borders (the console wraps long lines anywhere)."""
    return "".join(ch for ch in result.output if not ch.isspace() and ch not in "│╭╮╰╯─")


def forbidden(*args, **kwargs):
    raise AssertionError("the work started before the input was checked")


@pytest.fixture
def no_loading(monkeypatch):
    """Make loading data or a model fail loudly: a check must refuse before it."""
    import genaudit.data
    import genaudit.models

    monkeypatch.setattr(genaudit.data, "load_data", forbidden)
    monkeypatch.setattr(genaudit.models, "open_model", forbidden)


@pytest.fixture
def no_work(monkeypatch, no_loading):
    """Make every command's work fail loudly too."""
    import genaudit.comparison
    import genaudit.pipeline
    import genaudit.suspects
    import genaudit.validation

    for module, name in ((genaudit.pipeline, "audit"), (genaudit.comparison, "compare"),
                         (genaudit.comparison, "Watcher"), (genaudit.validation, "validate"),
                         (genaudit.suspects, "suspects")):
        monkeypatch.setattr(module, name, forbidden)


# ---- 5. every numeric option has a declared range, checked everywhere before any work -------------------------

def _is_number(annotation) -> bool:
    """int or float, optionally Optional (bool is a flag, not a number)."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return any(k in (int, float) for k in kinds)


def command_options() -> list[tuple[str, str, typing.Any, typing.Any]]:
    """(command, flag, annotation, parser) for every option of every command, as the command line declares them."""
    group = typer.main.get_command(app)
    found = []
    for info in app.registered_commands:
        command = info.name or info.callback.__name__
        parameters = inspect.signature(info.callback, eval_str=True).parameters
        for param in group.commands[command].params:
            if not param.opts[0].startswith("-"):
                continue  # an argument (the model, the folder)
            base, *meta = typing.get_args(parameters[param.name].annotation)
            option = next(m for m in meta if isinstance(m, OptionInfo))
            found.append((command, param.opts[0], base, option.parser))
    return found


BOUNDED_FLAGS = [(command, flag_, parser.bounds) for command, flag_, _, parser in command_options()
                 if isinstance(parser, Bounded)]
BOUNDED_FIELDS = [(cls, f) for cls in CLASSES for f in fields(cls) if f.metadata.get("bounds") is not None]


def test_every_numeric_option_declares_its_range():
    """A new number option, on a command or in the options classes, without a Range fails here."""
    unbounded = [(command, flag_) for command, flag_, annotation, parser in command_options()
                 if _is_number(annotation) and not isinstance(parser, Bounded)]
    assert unbounded == []
    hints = {cls: typing.get_type_hints(cls) for cls in CLASSES}
    missing = [f"{cls.__name__}.{f.name}" for cls in CLASSES for f in fields(cls)
               if _is_number(hints[cls][f.name]) and f.metadata.get("bounds") is None]
    assert missing == []
    assert {f.name for _, f in BOUNDED_FIELDS} >= {"resize", "mean", "std"}  # numbers typed as text on the CLI
    assert {(c, f) for c, f, _ in BOUNDED_FLAGS} >= {("score", "--tolerance"), ("watch", "--interval"),
                                                     ("watch", "--polls"), ("suspects", "--top"),
                                                     ("compare", "--jobs"), ("layers", "--input-shape")}


def bad_values(bounds: Range) -> list:
    """Values just outside a range, and the kinds it never takes (text, fractions, NaN, infinities)."""
    one = [float("nan"), float("inf"), -float("inf"), "abc", True]
    if bounds.whole:
        one.append(2.5)
    if bounds.choices:
        one += [v for v in range(min(bounds.choices) - 1, max(bounds.choices) + 2) if v not in bounds.choices]
    if bounds.low is not None:
        one.append(bounds.low if bounds.above else bounds.low - 1)
    if bounds.high is not None:
        one.append(bounds.high + 1)
    if bounds.count is None:
        return one
    fewest, most = bounds.count
    good = bounds.high if bounds.high is not None else (bounds.low or 0) + 1
    too_many = [] if most is None else [(good,) * (most + 1)]
    return [(v,) for v in one] + too_many + ([()] if fewest > 0 else [])


def as_typed(value) -> str:
    """A value as it would be typed after its flag."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def invocation(command: str, tmp_path: Path) -> list:
    """The shortest valid-looking command line for `command`, before its options."""
    return {"score": ["score", MODEL, "--data", "sample"], "compare": ["compare", MODEL, OTHER, "--data", "sample"],
            "watch": ["watch", tmp_path, "--data", "sample"],
            "validate": ["validate", MODEL, "--data", "sample", "--holdout", "sample"],
            "suspects": ["suspects", MODEL, "--data", "sample"], "layers": ["layers", MODEL]}[command]


@pytest.mark.parametrize(("command", "option", "bounds"), BOUNDED_FLAGS, ids=[f"{c} {f}" for c, f, _ in BOUNDED_FLAGS])
def test_out_of_range_values_are_refused_on_the_command_line(command, option, bounds, tmp_path, no_work):
    for value in bad_values(bounds):
        result = run(*invocation(command, tmp_path), option, as_typed(value))
        assert result.exit_code == 2 and "Traceback" not in result.output, (value, result.output)
        assert f"Invalidvaluefor'{option}':mustbe" in flat(result), (value, result.output)
        assert "".join(bounds.describe().split()) in flat(result)


@pytest.mark.parametrize(("cls", "field"), BOUNDED_FIELDS, ids=[f.name for _, f in BOUNDED_FIELDS])
def test_out_of_range_values_are_refused_by_the_python_api(cls, field, no_loading):
    bounds, name = field.metadata["bounds"], flag(field)
    for value in bad_values(bounds):
        with pytest.raises(GenauditError, match=re.escape(f"{name} must be {bounds.describe()} (got ")):
            if cls is RunOptions:
                genaudit.compare([MODEL, OTHER], "sample", **{field.name: value})
            else:
                genaudit.audit(MODEL, "sample", **{field.name: value})


@pytest.mark.parametrize(("cls", "field"), BOUNDED_FIELDS, ids=[f.name for _, f in BOUNDED_FIELDS])
def test_defaults_are_in_range_and_kept(cls, field):
    if field.default is not None:
        assert field.metadata["bounds"].convert(field.default) == field.default
    assert getattr(cls(), field.name) == field.default


def test_accepted_values_become_plain_numbers():
    import numpy as np

    options = DataOptions(samples=np.int64(300), resize="28", mean="0.5, 0.25", std=[0.5])
    assert type(options.samples) is int and options.samples == 300
    assert options.resize == (28,) and options.preprocessing().resize == (28, 28)
    assert options.mean == (0.5, 0.25) and options.std == (0.5,) and DataOptions(mean=0.5).mean == (0.5,)
    assert DataOptions(samples=None).samples is None  # None = every sample, in Python
    assert AuditOptions(seed=2**32 - 1).seed == 2**32 - 1 and AuditOptions(threads=None).threads is None


@pytest.mark.parametrize(("option", "gate"), [("--fail-under", "ablation=nan"), ("--fail-under", "ablation=inf"),
                                              ("--fail-if", "estimate<1e999"), ("--fail-if", "estimate>-1e999")])
@pytest.mark.parametrize("command", ["score", "compare"])
def test_a_gate_that_could_never_or_always_fail_is_refused(command, option, gate, tmp_path, no_work):
    result = run(*invocation(command, tmp_path), option, gate)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalidvaluefor'{option}':thevaluemustbeafinitenumber(got'{gate}')" in flat(result), result.output


# ---- 7. configuration files ---------------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder and no $GENAUDIT_CONFIG."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENAUDIT_CONFIG", raising=False)
    return tmp_path


@pytest.mark.parametrize(("command", "option", "bounds"), BOUNDED_FLAGS, ids=[f"{c} {f}" for c, f, _ in BOUNDED_FLAGS])
def test_out_of_range_config_values_name_the_file_and_key(command, option, bounds, workdir):
    key = option.removeprefix("--")
    for value in bad_values(bounds):
        value = as_typed(value) if isinstance(value, tuple) else value
        (workdir / "genaudit.yaml").write_text(yaml.safe_dump({command: {key: value}}))
        with pytest.raises(GenauditError) as refused:
            cli.configured(workdir)
        message = str(refused.value)
        assert f"In {workdir / 'genaudit.yaml'}, '{key}' (for genaudit {command})" in message, value
        assert f"must be {bounds.describe()}" in message


@pytest.mark.parametrize(("setting", "phrases"), [
    ({"samples": "abc"}, ["'samples'", "must be a whole number of at least 1 (got abc)"]),
    ({"sampels": 100}, ["'sampels' is not an option of any genaudit command", "Did you mean 'samples'?"]),
    ({"score": {"top": 5}}, ["'top' (in the 'score' table) is not an option of genaudit score"]),
    ({"scroe": {"samples": 5}}, ["'scroe' is not an option", "Did you mean 'score'?"]),
    ({"score": 5}, ["'score' must be a table"]),
    ({"samples": {"a": 1}}, ["'samples' must be a string, a number, true/false or a list of them"]),
    ({"fail-under": ["ablation=nan"]}, ["'fail-under'", "must be a finite number"]),
    ({"fail-under": "ablation=0.5"}, ["'fail-under' (for genaudit score) is wrong: it takes a list of values"]),
    ({"data": ["sample"]}, ["'data' (for genaudit score) is wrong: it takes one value, not a list"]),
    ({"resize": [28, 28]}, ["'resize' (for genaudit score) is wrong: it takes one value, not a list"]),
    ({"labels": "maybe"}, ["'labels' (for genaudit score) is wrong"]),
    ({"format": "pdf"}, ["'format' (for genaudit score) is wrong"]),
    ({"data": None}, ["'data' must be a string, a number, true/false or a list of them (got NoneType)"]),
])
def test_bad_config_settings_name_the_file_and_key(setting, phrases, workdir):
    (workdir / "genaudit.yaml").write_text(yaml.safe_dump(setting))
    with pytest.raises(GenauditError, match=str(workdir / "genaudit.yaml")) as refused:
        cli.configured(workdir)
    for phrase in phrases:
        assert phrase in str(refused.value)


def test_a_key_for_one_command_is_fine_at_the_top_level(workdir):
    (workdir / "genaudit.yaml").write_text("top: 5\ninterval: 2\njson: out.json\nformat: json\nsamples: 300\n"
                                           "mean: 0.5\nresize: 28,28\nfail-under: [ablation=0.5]\n")
    defaults = cli.configured(workdir)
    assert defaults["suspects"]["top"] == 5 and defaults["watch"]["interval"] == 2
    assert defaults["score"]["json_path"] == "out.json" and defaults["compare"]["fmt"] == "json"
    assert defaults["suspects"]["samples"] == 300  # suspects reads the configuration too


def _main(monkeypatch, capsys, *argv) -> tuple[int, str]:
    """Run the installed entry point in-process: its exit code and what it printed on stderr, without whitespace
    (the console wraps long lines anywhere)."""
    monkeypatch.setattr("sys.argv", ["genaudit", *map(str, argv)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    return done.value.code, "".join(capsys.readouterr().err.split())


def _has(text: str, phrase: str) -> bool:
    return "".join(phrase.split()) in text


@pytest.mark.parametrize("target", ["missing.yaml", "folder", "pyproject.toml"])
def test_a_named_config_that_cannot_be_read_is_an_error(target, workdir, monkeypatch, capsys, no_work):
    (workdir / "folder").mkdir()
    (workdir / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # no [tool.genaudit]
    monkeypatch.setenv("GENAUDIT_CONFIG", str(workdir / target))
    code, err = _main(monkeypatch, capsys, "score", MODEL, "--data", "sample")
    assert code == 2 and _has(err, f"GENAUDIT_CONFIG names {workdir / target}, which") and "Traceback" not in err
    assert _has(err, {"missing.yaml": "does not exist", "folder": "is a folder",
                      "pyproject.toml": "has no [tool.genaudit] table"}[target])


def test_with_several_config_files_a_notice_names_the_one_read(workdir, monkeypatch, capsys):
    (workdir / "genaudit.yaml").write_text("samples: 90\n")
    (workdir / "pyproject.toml").write_text("[tool.genaudit]\nsamples = 170\n")
    code, err = _main(monkeypatch, capsys, "score", "--help")
    assert code == 0
    assert _has(err, f"note: configuration read from {workdir / 'genaudit.yaml'}; not read: "
                     f"{workdir / 'pyproject.toml'}") and _has(err, "[tool.genaudit] in pyproject.toml")
    assert cli.configured(workdir)["score"]["samples"] == 90
    capsys.readouterr()
    (workdir / "genaudit.yaml").unlink()
    code, err = _main(monkeypatch, capsys, "score", "--help")
    assert code == 0 and "note:" not in err  # one file: nothing to say
    assert cli.configured(workdir)["score"]["samples"] == 170


def test_a_config_file_cannot_run_code_or_be_huge(workdir, monkeypatch, capsys, no_work):
    marker = workdir / "ran"
    (workdir / "genaudit.yaml").write_text(f"samples: !!python/object/apply:os.system ['touch {marker}']\n")
    code, err = _main(monkeypatch, capsys, "score", MODEL, "--data", "sample")
    assert code == 2 and _has(err, "Cannot read the configuration") and not marker.exists()
    (workdir / "genaudit.yaml").write_text("samples: 100\n" + "#" * (1 << 20))
    code, err = _main(monkeypatch, capsys, "score", MODEL, "--data", "sample")
    assert code == 2 and _has(err, "a configuration file is at most 1048576 bytes")


# ---- 6. output paths near the file system's limits ------------------------------------------------------------

OUTPUTS = [(command, option) for command in ("score", "compare", "validate", "suspects")
           for option in ("--json", "--html", *(("--csv",) if command == "suspects" else ()))]


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("command", "option"), OUTPUTS)
def test_output_paths_the_file_system_refuses_are_named_before_any_work(command, option, tmp_path, no_work):
    (tmp_path / "afile").write_text("x")
    cases = [(tmp_path / ("n" * 252 + ".out"), "the file name is 256 bytes long, more than the 255"),
             (tmp_path / ("d" * 256) / "c.out", "File name too long"),
             (tmp_path.joinpath(*["p" * 200] * 25, "c.out"), "File name too long"),  # beyond PATH_MAX
             (tmp_path / "missing" / "c.out", "does not exist"),
             (tmp_path, "it is a folder"),
             (tmp_path / "afile" / "c.out", "is a file, not a folder"),
             (Path("/sys/c.out"), "permission denied")]  # no one may create files there, not even root
    for path, problem in cases:
        result = run(*invocation(command, tmp_path), option, path)
        assert_user_error(result, f"Cannot write {option}", problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


def test_the_same_file_for_two_outputs_is_refused(tmp_path, no_work):
    out = tmp_path / "same"
    assert_user_error(run("suspects", MODEL, "--data", "sample", "--json", out, "--csv", out),
                      "Cannot write --json and --csv to the same file")


def test_a_name_that_fits_is_written_whole_with_a_short_temporary_name(tmp_path, monkeypatch):
    """250 bytes fit; the old temporary sibling '.<name>.XXXXXXXX.tmp' did not (the check refused the path)."""
    import tempfile

    made = []
    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    out = tmp_path / ("j" * 245 + ".json")
    result = run("score", MODEL, "--data", "sample", "--samples", 100, "--json", out, "-f", "json")
    assert result.exit_code == 0, result.output
    assert load(out)["samples"] == 100
    assert made and all(len(os.fsencode(Path(path).name)) < 32 for _, path in made)
    _no_leftovers(tmp_path)


def test_a_write_the_file_system_refuses_midway_leaves_nothing(tmp_path):
    def full(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "card.json"
    with pytest.raises(GenauditError, match=f"Cannot write {target}: No space left on device"):
        write_atomic(target, full)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):  # an interrupt also leaves no temporary file
        write_atomic(target, lambda fh: (_ for _ in ()).throw(KeyboardInterrupt))
    assert list(tmp_path.iterdir()) == []


def test_check_outputs_names_each_option(tmp_path):
    check_outputs({"--json": tmp_path / "a.json", "--html": None, "--csv": tmp_path / "a.csv"})
    with pytest.raises(GenauditError, match="--csv .*e.g. .*suspects.csv"):
        check_outputs({"--csv": tmp_path})


# ---- 8. compare given the same model twice --------------------------------------------------------------------

def test_copies_of_one_model_are_never_a_significant_pick(tmp_path):
    copy = tmp_path / "copy.onnx"
    shutil.copy(MODEL, copy)
    link = tmp_path / "link.onnx"
    link.symlink_to(MODEL)
    twice = genaudit.compare([MODEL, MODEL], "sample", samples=200)
    assert twice["ranking"] == [str(MODEL)]  # the same path once
    assert twice["selection"] == {"significant": False, "tied_with": [],
                                  "why": "only one model: nothing to compare it with"}
    copies = genaudit.compare([MODEL, copy, link], "sample", samples=200, order="given")
    assert copies["selected"] == str(MODEL) and copies["ranking"] == [str(MODEL), str(copy), str(link)]
    assert copies["selection"] == {"significant": False, "tied_with": [str(copy), str(link)],
                                   "why": "only one model (the others are copies of it: the same file contents): "
                                          "nothing to compare it with"}
    mixed = genaudit.compare([MODEL, copy, OTHER], "sample", samples=200, order="given")
    assert mixed["selected"] == str(MODEL) and mixed["selection"]["tied_with"] == [str(copy)]
    assert not mixed["selection"]["significant"]
    assert mixed["selection"]["why"].startswith("1 other file(s) are copies of it")
    assert mixed["selection"]["why"].endswith("better than every other model beyond two standard errors of sampling")


def test_selection_tells_copies_from_ties():
    name = lambda i: f"m{i}"  # noqa: E731
    assert selection([0, 1], [0.9, 0.7], [0.01, 0.01], name, ["a", "b"])["significant"]
    same = selection([0, 1], [0.9, 0.7], [0.01, 0.01], name, ["a", "a"])  # a copy measured apart: still a copy
    assert not same["significant"] and same["tied_with"] == ["m1"] and same["why"].startswith("only one model")
    both = selection([0, 1, 2], [0.9, 0.9, 0.89], [0.01] * 3, name, ["a", "a", "b"])
    assert both["tied_with"] == ["m1", "m2"] and "1 other file(s) are copies" in both["why"]
    assert "within two standard errors of sampling of 1 other model(s)" in both["why"]
    alone = selection([0], [0.9], [0.01], name, ["a"])
    assert not alone["significant"] and alone["why"] == "only one model: nothing to compare it with"


def square(path: Path, factor: int) -> int:
    return factor * len(path.name)


def test_a_local_pool_never_starts_more_processes_than_models(tmp_path, monkeypatch):
    import multiprocessing

    files, sizes, real = [tmp_path / "a.onnx", tmp_path / "bb.onnx"], [], multiprocessing.Pool

    def pool(processes: int, **kwargs):
        sizes.append(processes)
        assert processes <= len(files), f"a pool of {processes} processes for {len(files)} models"  # before forking
        return real(processes, **kwargs)

    monkeypatch.setattr(multiprocessing, "Pool", pool)
    results, failures = run_tasks(square, files, (3,), RunOptions(jobs=10_000))
    assert results == [18, 21] and failures == [] and sizes == [2]
