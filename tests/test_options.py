"""One options object: the Python API, every command and the config file share the same options and names."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

import numpy as np
import pytest
from typer.testing import CliRunner

import genaudit
from genaudit.cli import app, configured
from genaudit.options import AuditOptions, DataOptions, build, cli_fields

runner = CliRunner()
COMMANDS = ("score", "compare", "watch", "validate")


def _flags(command: str) -> set[str]:
    import typer.main

    click_command = typer.main.get_command(app).commands[command]
    return {flag for param in click_command.params for flag in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_every_shared_option(command):
    flags = _flags(command)
    for cls in (DataOptions, AuditOptions):
        for f in cli_fields(cls):
            expected = f.metadata["flags"][0].split("/")[0] if f.metadata["flags"] else "--" + f.name.replace("_", "-")
            assert expected in flags, f"{command} lacks {expected}"
    assert {"--data", "--format"} <= flags


@pytest.mark.parametrize("function", ["audit", "compare", "validate"])
def test_python_api_takes_the_command_line_names_as_keywords(function):
    parameters = inspect.signature(getattr(genaudit, function)).parameters
    for cls in (DataOptions, AuditOptions):
        for f in fields(cls):
            assert parameters[f.name].kind is inspect.Parameter.KEYWORD_ONLY
            assert parameters[f.name].default == f.default
    assert "labels" in parameters and "probes" in parameters and "use_labels" not in parameters


def test_unknown_keyword_names_the_known_ones():
    with pytest.raises(TypeError, match="use_labels.*known: .*labels"):
        build({"use_labels": False}, DataOptions, AuditOptions)


def test_the_config_file_takes_a_table_for_every_command_with_options(tmp_path):
    import typer.main

    commands = typer.main.get_command(app).commands
    with_options = {name for name, command in commands.items() if any(p.opts[0].startswith("-") for p in command.params)}
    (tmp_path / "pyproject.toml").write_text("[tool.genaudit]\n" + "".join(f"[tool.genaudit.{name}]\n"
                                                                           for name in sorted(with_options)))
    assert set(configured(tmp_path)) == with_options
    (tmp_path / "pyproject.toml").write_text("[tool.genaudit.explain]\n")  # no option: nothing to configure
    with pytest.raises(genaudit.errors.GenauditError, match="'explain' is not an option of any genaudit command"):
        configured(tmp_path)


def test_a_new_command_is_configurable_with_no_list_to_edit(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))  # restored afterwards

    @app.command()
    def hello(samples: int = 10, name: str = "x") -> None:
        """A command added by a test."""

    (tmp_path / "genaudit.yaml").write_text("samples: 5\nhello:\n  name: y\n")
    defaults = configured(tmp_path)
    assert defaults["hello"] == {"samples": 5, "name": "y"} and defaults["score"] == {"samples": 5}
    (tmp_path / "genaudit.yaml").write_text("hello:\n  nme: y\n")
    with pytest.raises(genaudit.errors.GenauditError, match="'nme' .in the 'hello' table. is not an option of "
                                                            "genaudit hello. Did you mean 'name'"):
        configured(tmp_path)


def test_config_reaches_validate_and_watch(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.genaudit]\nsamples = 123\nlayer = "fc1"\nprobes = 7\n')
    defaults = configured(tmp_path)
    for command in ("validate", "watch", "score", "compare"):
        assert defaults[command] == {"samples": 123, "layer": "fc1", "probes": 7}


def test_data_as_arrays_gives_the_same_audit_as_the_file(trained_mlp, tiny_data):
    archive = np.load(tiny_data)
    from_file = genaudit.audit(trained_mlp["onnx"], str(tiny_data), samples=120, labels=False)
    from_tuple = genaudit.audit(trained_mlp["onnx"], (archive["x"], archive["y"]), samples=120, labels=False)
    from_dict = genaudit.audit(trained_mlp["onnx"], {"x": archive["x"]}, samples=120)
    assert from_tuple["diagnostics"] == from_file["diagnostics"]
    assert from_tuple["data"]["spec"] == "arrays" and from_dict["label_mode"] == "predictions"


def test_validate_takes_split_layer_and_format(trained_mlp, tiny_data):
    layer = genaudit.audit(trained_mlp["onnx"], str(tiny_data), samples=80)["layer"]["name"]
    models = [str(trained_mlp[kind]) for kind in ("onnx", "script", "trace")]
    common = [*models, "--data", str(tiny_data), "--holdout", str(tiny_data), "--samples", "80", "--split", "train",
              "--layer", layer]
    result = runner.invoke(app, ["validate", *common, "--format", "json"])
    assert result.exit_code == 0, result.output
    study = json.loads(result.output)
    assert len(study["models"]) == 3 and study["data"]["samples"] == 80
    markdown = runner.invoke(app, ["validate", *common, "--format", "markdown"])
    assert markdown.exit_code == 0 and "| metric | better | oriented τ |" in markdown.output


def test_version_flag_names_the_version_and_schema():
    from genaudit.scorecard import SCHEMA_VERSION
    from genaudit.version import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"genaudit {__version__} (scorecard schema {SCHEMA_VERSION})"


def test_every_registered_diagnostic_declares_a_known_kind():
    from genaudit.diagnostics import REGISTRY
    from genaudit.registry import KINDS, Diagnostic

    assert {d.kind for d in REGISTRY} <= set(KINDS)
    with pytest.raises(ValueError, match="kind 'layerwise'"):
        Diagnostic("x", "layerwise", lambda c: None)
