"""Every report escapes what it shows: strings from the user's files (paths, image and class-folder names, layer
and output names from a model graph, labels, error messages quoting them) never become HTML, Markdown, Rich
markup or terminal control sequences, in any format of any command."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_MODELS
from genaudit.cli import app
from genaudit.render import FORMATS, renderer
from genaudit.render.escape import csv_cell, markdown_code, markdown_text, printable

GOLDEN = Path(__file__).resolve().parent / "golden"
# HTML, Markdown (code span, table separator, emphasis, link), Rich markup (an unbalanced closing tag raises in
# Rich), an ANSI colour sequence and a line break
HOSTILE = '<img src=x onerror=alert(1)>`|[bold red]x[/] *a* [l](javascript:1) \x1b[31mred\nnext'
SHOWN = printable(HOSTILE)  # what a report may show: the name with control characters made visible
runner = CliRunner()


def _hostile_card(path: str) -> dict:
    card = json.loads((GOLDEN / path).read_text()) | {"genaudit_version": "test"}
    card["model"]["path"] = card["layer"]["name"] = card["data"]["spec"] = HOSTILE
    card["model"].setdefault("output", {}).update(name=HOSTILE, index=0, of=2)
    card["warnings"] = [f"class folder {HOSTILE} has one image"]
    for row in card.get("layers", []):
        row["name"] = HOSTILE
    if "regularize_layer" in card:
        card["regularize_layer"]["name"] = HOSTILE
    return card


def _hostile_comparison() -> dict:
    result = json.loads((GOLDEN / "compare_clean_random.json").read_text())
    for row, card in zip(result["models"], result["scorecards"]):
        row["model"] = card["model"]["path"] = HOSTILE
        card["genaudit_version"] = "test"
        card["warnings"] = [HOSTILE]
    result["selected"] = result["early_stopping"]["peak"] = result["early_stopping"]["memorization_onset"] = HOSTILE
    result["selection"] = {"significant": False, "tied_with": [HOSTILE], "why": HOSTILE}
    result["data"]["spec"] = HOSTILE
    result["failed"] = [{"model": HOSTILE, "error": HOSTILE}]
    return result


STUDY = {
    "models": [{"model": HOSTILE, "run": HOSTILE, "holdout_accuracy": a, "metrics": {"ablation": b}}
               for a, b in ((0.9, 0.8), (0.7, 0.6), (0.8, 0.5))],
    "data": {"spec": HOSTILE}, "holdout": {"spec": HOSTILE}, "failed": [{"model": HOSTILE, "error": HOSTILE}],
    "correlations": {"ablation": {"path": "ablation.auc", "better": "higher", "kendall": 0.3, "spearman": 0.5,
                                  "n": 3, "within_run_kendall_mean": None, "runs": 0, "oriented_kendall": 0.3}},
}
SUSPECTS = {
    "model": {"path": HOSTILE}, "data": {"spec": HOSTILE}, "samples": 2, "top": 2,
    "summary": {"fraction": 0.5, "suspect_fraction": 0.5, "threshold": 0.5},
    "rows": [{"index": HOSTILE, "label": HOSTILE, "predicted": HOSTILE, "suggested": HOSTILE, "suspicion": 0.9,
              "thumbnail": "data:image/png;base64,AAAA"},
             {"index": "ok.png", "label": 1, "predicted": 1, "suggested": 1, "suspicion": 0.1}],
}
DOCUMENTS = [
    ("report", (_hostile_card("score_mlp_clean_labels.json"), [f"fail: {HOSTILE}"])),
    ("report", (_hostile_card("score_cnn_layers_probes.json"), [])),
    ("comparison", (_hostile_comparison(),)),
    ("validation", (STUDY,)),
    ("suspects", (SUSPECTS,)),
]
IDS = ["score", "score-layers", "compare", "validate", "suspects"]


def _render(fmt: str, method: str, document: tuple) -> str:
    stream = io.StringIO()
    getattr(renderer(fmt, stream), method)(*copy.deepcopy(document))
    return stream.getvalue()


class _Tags(HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "br", "code", "table", "tr",
             "th", "td", "div", "img", "figure", "figcaption"}


def check_page(page: str, shown: str | None = SHOWN) -> None:
    """The page holds only genaudit's own elements, no event handler or script URL, and shows the hostile name
    (`shown`) as text."""
    parser = _Tags()
    parser.feed(page)
    assert {tag for tag, _ in parser.tags} <= PAGE_TAGS
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs
    assert shown is None or shown in "".join(parser.text)
    assert "\x1b" not in page


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("method,document", DOCUMENTS, ids=IDS)
def test_no_format_passes_a_control_character_through(fmt, method, document):
    # every format in FORMATS, a new one included without a test edit; each format's own escaping is tested below
    text = _render(fmt, method, document)
    assert "\x1b" not in text and "\r" not in text


@pytest.mark.parametrize("method,document", DOCUMENTS, ids=IDS)
def test_html_reports_show_hostile_names_as_text(method, document):
    check_page(_render("html", method, document))


def outside_code(markdown: str) -> str:
    """Markdown without its code spans (where CommonMark shows HTML as text): where no tag may survive."""
    return re.sub(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", "", markdown)


@pytest.mark.parametrize("method,document", DOCUMENTS, ids=IDS)
def test_markdown_reports_keep_hostile_names_inert(method, document):
    text = _render("markdown", method, document)
    assert "\x1b" not in text and "\n" + "next" not in text
    assert "<img" not in outside_code(text)
    # every table row keeps the header's column count: no unescaped | from a name splits a cell
    for table in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.M):
        lines = table.strip().split("\n")
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) == 1, lines


@pytest.mark.parametrize("method,document", DOCUMENTS, ids=IDS)
def test_terminal_reports_show_rich_markup_and_control_characters_literally(method, document):
    text = _render("table", method, document)  # an unbalanced [/] from a name would raise MarkupError
    assert "\x1b" not in text
    if method != "validation":  # the terminal's validation table names metrics only, no file
        assert "[bold red]x[/]" in text.replace("\n", "")


def test_markdown_code_spans_hold_backticks_and_pipes():
    assert markdown_code("a`b") == "``a`b``"
    assert markdown_code("`x`") == "`` `x` ``"
    assert markdown_code("a|b") == "`a\\|b`"
    assert markdown_text("<b>*x*</b>|") == "&lt;b&gt;\\*x\\*&lt;/b&gt;\\|"


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    """An image folder whose class folders and files carry markup in their names, and a model file named so."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hostile")
    data = np.load(SAMPLE_MODELS.parent / "genaudit" / "sample_data" / "mnist_sample.npz")
    folder = root / "images"
    for c in range(10):
        d = folder / ("=1+1" if c == 0 else f"<b onmouseover=alert({c})>class{c}" if c % 2 else f"class{c}")
        d.mkdir(parents=True)
        for i in np.flatnonzero(data["y"] == c)[:12]:
            name = f"<img src=x onerror=alert({i})>.png" if i % 3 == 0 else f"{i}.png"
            Image.fromarray(np.asarray(data["x"][i]).reshape(28, 28).astype(np.uint8)).save(d / name)
    model = root / "<script>alert(1)<script>.onnx"
    model.write_bytes((SAMPLE_MODELS / "mlp_clean.onnx").read_bytes())
    return model, folder


@pytest.mark.parametrize("command", [["score"], ["suspects", "--top", "30"]])
def test_cli_html_and_markdown_escape_hostile_file_names(command, hostile_folder, tmp_path):
    model, folder = hostile_folder
    page = tmp_path / "report.html"
    common = [command[0], str(model), "--data", str(folder), "--channels", "1", *command[1:]]
    result = runner.invoke(app, [*common, "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    check_page(text, shown=None)
    assert "&lt;script&gt;alert(1)&lt;script&gt;.onnx" in text
    if command[0] == "suspects":  # the suspects page names image files: one of them is hostile
        assert "&lt;img src=x onerror=alert(" in text
    markdown = runner.invoke(app, [*common, "--format", "markdown"])
    assert markdown.exit_code == 0, markdown.output
    assert "<script>" not in outside_code(markdown.output) and "<img" not in outside_code(markdown.output)
    assert "<script>alert(1)<script>.onnx" in markdown.output  # shown, in a code span


def test_suspects_csv_cells_never_start_a_spreadsheet_formula(hostile_folder, tmp_path):
    model, folder = hostile_folder
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["suspects", str(model), "--data", str(folder), "--channels", "1", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 120 and not any(row["index"].startswith(("=", "+", "-", "@")) for row in rows)
    assert sum("/=1+1/" in row["index"] for row in rows) == 12


def test_csv_cells_defuse_formulas_and_control_characters():
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_cell("@SUM(1)") == "'@SUM(1)"
    assert csv_cell("a\x1bb.png") == "a\ufffdb.png" and csv_cell(3) == 3 and csv_cell("ok.png") == "ok.png"


@pytest.fixture(scope="module")
def hostile_graph(tmp_path_factory):
    """The sample MLP with its feature layer's tensor renamed to markup."""
    import onnx

    model = onnx.load(str(SAMPLE_MODELS / "mlp_clean.onnx"))
    old, new = "/relu2/Relu_output_0", "[bold red]x[/]<img src=x onerror=alert(1)>`|\x1b[31m"
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    path = tmp_path_factory.mktemp("graph") / "named.onnx"
    onnx.save(model, str(path))
    return path, new


def test_layer_names_from_the_graph_are_escaped_in_every_command(hostile_graph, tmp_path):
    path, name = hostile_graph
    layers = runner.invoke(app, ["layers", str(path)])
    assert layers.exit_code == 0, layers.output
    assert "[bold red]x[/]<img" in layers.output.replace("\n", "") and "\x1b" not in layers.output
    page = tmp_path / "r.html"
    score = runner.invoke(app, ["score", str(path), "--data", "sample", "--samples", "200", "--html", str(page)])
    assert score.exit_code == 0, score.output
    check_page(page.read_text(), shown=printable(name))
    markdown = runner.invoke(app, ["score", str(path), "--data", "sample", "--samples", "200", "-f", "markdown"])
    assert "<img" not in outside_code(markdown.output) and "\x1b" not in markdown.output
