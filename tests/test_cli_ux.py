"""What a new user meets: compare without labels, 80-column terminals and CI logs, help pages, one style of
error message with the right advice, where outputs went, and what watch is doing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil

import numpy as np
import pytest
import typer.main
from conftest import SAMPLE_MODELS, assert_user_error
from typer.testing import CliRunner

from genaudit.cli import app
from genaudit.models import SUFFIXES, formats_read
from genaudit.render import FORMATS, renderer, renderer_class

runner = CliRunner()
MODELS = [SAMPLE_MODELS / "mlp_clean.onnx", SAMPLE_MODELS / "mlp_random.onnx"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args, columns: int = 80):
    """The CLI in a terminal (or CI log) `columns` wide."""
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)}, terminal_width=columns)


def lines_of(text: str) -> list[str]:
    return ANSI.sub("", text).splitlines()


# ---- compare without labels ranks, and never says None --------------------------------------------------------

@pytest.fixture(scope="module")
def comparisons(tmp_path_factory) -> dict[str, dict]:
    """Comparison documents of the sample models: with labels, without, and without anything to rank by (the
    label-free fallback pointed at a metric these audits do not measure)."""
    import genaudit.comparison

    documents = {"labels": genaudit.compare(MODELS, "sample", samples=200, order="given"),
                 "no labels": genaudit.compare(MODELS, "sample", samples=200, order="given", labels=False)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(genaudit.comparison, "LABEL_FREE", "input_noise")  # needs --probes: no model has it
        documents["nothing to rank"] = genaudit.compare(MODELS, "sample", samples=200, labels=False)
    return documents


def test_without_labels_compare_ranks_by_the_label_free_score_and_says_why():
    result = run("compare", *MODELS, "--data", "sample", "--samples", 200, "--no-labels", "-f", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["rank_by"]["metric"] == "score" and document["ranking"] == [str(m) for m in MODELS]
    assert document["selected"] == str(MODELS[0]) and document["early_stopping"]["peak"] == str(MODELS[0])
    assert [row["rank"] for row in document["models"]] == [1, 2]
    table = run("compare", *MODELS, "--data", "sample", "--samples", 200, "--no-labels")
    flat = " ".join(ANSI.sub("", table.stdout).split())
    assert "ranked by score (generalization score; higher is better)" in flat
    assert ("instead of the default, estimate (expected held-out accuracy): the models were audited without "
            "labels") in flat
    assert f"selected (best score): {MODELS[0]}" in flat
    assert "carries no measured sampling error" in flat  # the score has no standard error: no clear winner claimed
    best = run("compare", *MODELS, "--data", "sample", "--samples", 200, "--no-labels", "--select", "best")
    assert best.exit_code == 0 and best.stdout == f"{MODELS[0]}\n"


def test_with_labels_compare_still_ranks_by_the_estimate(comparisons):
    assert comparisons["labels"]["rank_by"]["metric"] == "estimate"
    assert comparisons["labels"]["selected"] == str(MODELS[0])


def test_a_metric_no_model_has_is_refused_and_select_best_never_prints_none(monkeypatch):
    assert_user_error(run("compare", *MODELS, "--data", "sample", "--samples", 100, "--no-labels", "--rank-by",
                          "estimate"),
                      "--rank-by estimate: no model has a value of estimate (the models were audited without labels)",
                      "--rank-by score")
    import genaudit.comparison

    monkeypatch.setattr(genaudit.comparison, "LABEL_FREE", "input_noise")
    refused = run("compare", *MODELS, "--data", "sample", "--samples", 100, "--no-labels", "--select", "best")
    assert_user_error(refused, "--select best: no model can be selected: no model has a value of input_noise")
    assert refused.stdout == "" and "None" not in refused.output


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("case", ["labels", "no labels", "nothing to rank"])
def test_no_format_shows_python_none(comparisons, case, fmt):
    stream = io.StringIO()
    renderer(fmt, stream).comparison(comparisons[case])
    text = stream.getvalue()
    assert not re.search(r"\bNone\b", text), case
    if not renderer_class(fmt).verbatim and case == "nothing to rank":  # a document format says null
        assert "none" in text and "no model has a value of input_noise" in text.replace("\\", "")


def test_a_tie_selects_what_its_advice_says():
    from genaudit.comparison import selection

    name = lambda i: f"m{i}"  # noqa: E731
    later_is_best = selection([1, 0], [0.79, 0.80], [0.01, 0.01], name, metric="estimate")
    assert later_is_best["tied_with"] == ["m0"] and not later_is_best["significant"]
    assert "the best estimate among them is selected" in later_is_best["why"] and "earliest" not in later_is_best["why"]


# ---- 80 columns: what a user copies is never cut or folded ----------------------------------------------------

def test_compare_at_80_columns_fits_and_keeps_long_file_names_whole(tmp_path):
    readme = run("compare", *MODELS, "--data", "sample", "--samples", 100, "--no-labels")
    assert readme.exit_code == 0 and max(map(len, lines_of(readme.stdout))) <= 80  # the README's example
    assert any(line.rstrip().endswith(" mlp_clean.onnx") for line in lines_of(readme.stdout))
    names = [f"run-2024-06-01_lr3e-4_wd1e-2_dropout0.1_label-noise-0.{i}_epoch{i:04d}_final.onnx" for i in (1, 2)]
    for model, name in zip(MODELS, names):
        shutil.copy(model, tmp_path / name)
    result = run("compare", tmp_path, "--data", "sample", "--samples", 100)
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    for name in names:
        assert any(name in line for line in lines), name  # on one line, not cut with … nor folded
    assert f"selected (best estimate): {tmp_path / names[0]}" in lines
    assert not re.search(r"\S…", result.stdout)  # nothing cut (the trend's range is 'lo … hi')


def test_the_score_report_keeps_a_long_model_path_whole(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("COLUMNS", "80")
    card = json.loads((Path(__file__).parent / "golden" / "score_mlp_clean_labels.json").read_text())
    path = "/srv/experiments/run-2024-06-01_lr3e-4_wd1e-2_dropout0.1/checkpoints/checkpoint_epoch_0001.onnx"
    card["model"]["path"], card["genaudit_version"] = path, "test"
    stream = io.StringIO()
    renderer("table", stream).report(card, [])
    assert any(path in line for line in lines_of(stream.getvalue()))  # not cut with … nor folded


def _long_named_model(path, names: list[str]) -> None:
    """An ONNX MLP (1x8x8 -> 16 -> 4) whose hidden tensors have the given names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in
               (("w1", (16, 64)), ("b1", (16,)), ("w2", (4, 16)), ("b2", (4,)))]
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w1", "b1"], [names[0]], transB=1),
             helper.make_node("Relu", [names[0]], [names[1]]),
             helper.make_node("Gemm", [names[1], "w2", "b2"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "long",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_layers_at_80_columns_never_truncates_a_layer_name(tmp_path):
    names = ["/encoder/transformer_blocks.11/feed_forward_network/output_projection/Gemm_output_0",
             "/encoder/transformer_blocks.11/feed_forward_network/activation_after_projection/Relu_output_0"]
    _long_named_model(tmp_path / "long.onnx", names)
    result = run("layers", tmp_path / "long.onnx")
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    for name in names:
        assert any(name in line for line in lines), name
    assert not re.search(r"\S…", result.stdout)
    assert any(names[1] in line and "★" in line for line in lines)  # the default layer, marked on its row


def test_validate_at_80_columns_shows_every_metric_name_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    names = ["neighbours_features", "selectivity_ordered", "neighbours_input", "neighbours_early", "steadiness_sum"]
    study = {"models": [{"model": "a.onnx"}, {"model": "b.onnx"}], "data": {"spec": "sample"},
             "holdout": {"spec": "holdout.npz"}, "failed": [],
             "correlations": {name: {"better": "higher", "kendall": 0.5, "spearman": 0.6, "oriented_kendall": 0.5,
                                     "within_run_kendall_mean": None, "runs": 0} for name in names}}
    stream = io.StringIO()
    renderer("table", stream).validation(study)
    lines = lines_of(stream.getvalue())
    assert max(map(len, lines)) <= 80 and "…" not in stream.getvalue()
    for name in names:
        assert any(line.lstrip().startswith(name + " ") for line in lines), name


@pytest.mark.parametrize("command", list(typer.main.get_command(app).commands))  # every command, a new one too
def test_help_is_readable_at_80_columns(command):
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.stdout
    # descriptions start by column 34, so they wrap in lines of 44 characters or more (Rich's boxes gave ~19)
    assert all(len(line) - len(line.lstrip()) <= 34 for line in lines if line.strip())


def test_help_keeps_the_extras_of_install_hints():
    text = " ".join(run("compare", "--help").stdout.split())
    for hint in ("pip install 'genaudit[mlflow]'", "pip install 'genaudit[gpu]'", "pip install 'genaudit[ray]'"):
        assert hint in text
    assert run("-h").stdout == run("--help").stdout


def test_score_help_names_every_model_file_suffix():
    text = " ".join(run("score", "--help").stdout.split())
    assert f"Model file: {formats_read()}." in text  # from SUFFIXES: a new suffix needs no help edit
    assert all(suffix in text for suffix in SUFFIXES)


# ---- messages -------------------------------------------------------------------------------------------------

def test_every_error_starts_with_error_on_its_first_line():
    cases = [("score", MODELS[0], "--data", "sample", "--samples", 0),  # a usage error, from the option's parser
             ("score", MODELS[0], "--data", "sample", "--bogus"),  # an unknown option
             ("score", MODELS[0], "--data", "mnsit")]  # a genaudit error
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2 and result.stdout == "", args
        assert result.stderr.startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.output and "╭" not in result.output, args
    assert "Usage: root score [OPTIONS]" in run(*cases[1]).stderr  # then how to call the command


def test_a_misspelled_data_name_gets_did_you_mean():
    assert_user_error(run("score", MODELS[0], "--data", "mnsit"), "Unknown data 'mnsit': Did you mean 'mnist'?")
    assert "Did you mean" not in run("score", MODELS[0], "--data", "nothing-like-it").stderr


def test_score_advice_names_only_options_score_takes():
    refused = run("score", SAMPLE_MODELS / "mlp_clean.pt", "--data", "sample", "--resize", "8,8")
    assert_user_error(refused, "does not accept the data's shape", "--channels and --resize convert images.")
    assert "--input-shape" not in refused.stderr
    assert_user_error(run("layers", SAMPLE_MODELS / "mlp_clean.pt"), "--input-shape C,H,W")  # layers takes it


def test_advice_for_an_option_the_command_lacks_is_left_out():
    from genaudit.cli import _for_command

    hostile = ("A model file that declares such a size is damaged or hostile: export the model again, or pass the "
               "input shape it takes with --input-shape.")
    assert _for_command(hostile, "compare").endswith("damaged or hostile: export the model again.")
    assert _for_command(hostile, "layers") == hostile
    kept = "Pass --input-shape C,H,W (or, for `score`, --data: the shape is taken from the data)."
    assert _for_command(kept, "layers") == kept


@pytest.mark.parametrize("path", ["diagnostics.ablation.auc", "ablation.auc", "ablation", "ablation AUC"])
def test_explain_takes_the_scorecard_paths_it_prints(path):
    result = run("explain", path)
    assert result.exit_code == 0, result.output
    assert "ablation AUC (ablation; scorecard: diagnostics.ablation.auc)" in result.stdout


def test_explain_prints_every_text_as_written():
    """Formulas hold brackets (mean_n [p_wrong_n > 0.5 ...], Σ_n [ln P(c | s_n) ...]) that rich would read as markup
    tags and drop: every metric's texts come out verbatim (lines rewrapped), in the card and in the list."""
    from genaudit.metrics import METRICS

    flat = lambda text: " ".join(text.split())  # noqa: E731
    listed = flat(run("explain").stdout)
    for m in METRICS:
        shown = flat(run("explain", m.name).stdout)
        for text in (m.label, m.meaning, m.formula, m.source, m.reading):
            assert flat(text) in shown, (m.name, text)
        assert m.name in listed
    assert "[p_wrong_n > 0.5 and ŷ_n = y_n]" in flat(run("explain", "memorized").stdout)


def test_explain_suggests_the_metric_meant():
    assert_user_error(run("explain", "ablaton"), "Unknown metric 'ablaton'. Did you mean 'ablation'?")


def test_each_written_file_is_named_on_stderr(tmp_path):
    card, page = tmp_path / "card.json", tmp_path / "report.html"
    result = run("score", MODELS[0], "--data", "sample", "--samples", 100, "--json", card, "--html", page,
                 "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(card.read_text())  # stdout: the report alone
    assert result.stderr.splitlines() == [f"wrote {card}", f"wrote {page}"]
    table = tmp_path / "suspects.csv"
    suspects = run("suspects", MODELS[0], "--data", "sample", "--samples", 100, "--csv", table)
    assert suspects.exit_code == 0 and suspects.stderr.splitlines() == [f"wrote {table}"]


def test_first_paragraph_is_whole_and_never_cut_mid_word():
    from genaudit.errors import first_paragraph

    message = ValueError("The store is in maintenance mode.\nSet ALLOW=true to opt out.\n\nTraceback: ...")
    assert first_paragraph(message) == "The store is in maintenance mode. Set ALLOW=true to opt out."
    assert first_paragraph(ValueError("word " * 100), limit=42) == "word word word word word word word word…"
    assert first_paragraph(RuntimeError("")) == "RuntimeError"


# ---- watch says what it is doing ------------------------------------------------------------------------------

def test_watch_says_what_it_watches_and_what_it_finds(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    empty = run("watch", folder, "--data", "sample", "--samples", 100, "--polls", 1, "--interval", 0)
    assert empty.exit_code == 0, empty.output
    assert empty.stdout == ""
    patterns = ", ".join(f"*{suffix}" for suffix in sorted(SUFFIXES))  # *.onnx, *.pt, *.pt2, *.pth, *.ts, ...
    assert empty.stderr.splitlines() == [
        f"watching {folder} for checkpoints ({patterns}), a look every 0 s, up to 1 look(s)",
        f"no checkpoint in {folder} yet; waiting for the first"]
    for i, model in enumerate(MODELS):
        shutil.copy(model, folder / f"ckpt_{i}.onnx")
        os.utime(folder / f"ckpt_{i}.onnx", (1, 1))  # written long ago: complete
    found = run("watch", folder, "--data", "sample", "--samples", 100, "--polls", 2, "--interval", 0, "-f", "json")
    assert found.exit_code == 0, found.output
    assert "found 2 new checkpoint(s), 2 in all: ckpt_0.onnx, ckpt_1.onnx; auditing" in found.stderr
    assert json.loads(found.stdout)["rank_by"]["metric"] == "estimate"  # one document: the second look found none


def test_the_progress_bar_is_shown_only_on_an_interactive_terminal(monkeypatch):
    """In a pipe or a CI log there is no bar at all (a no-op context and callback); in a terminal, rich's bar."""
    from rich.console import Console
    from rich.progress import Progress

    import genaudit.cli as cli

    monkeypatch.setattr(cli, "err", Console(stderr=True, force_terminal=False, force_interactive=False))
    for enabled in (True, False):
        bar, progress = cli._progress("audit", enabled)
        with bar:
            progress(1, 2)
        assert not isinstance(bar, Progress)
    monkeypatch.setattr(cli, "err", Console(stderr=True, file=io.StringIO(), force_terminal=True,
                                            force_interactive=True))
    bar, progress = cli._progress("audit", True)
    assert isinstance(bar, Progress)
    assert not isinstance(cli._progress("audit", False)[0], Progress)  # a JSON or CSV report: no bar either
