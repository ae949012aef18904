"""compare, early stopping, model selection, CI gates, config, and the reports people look at."""

from __future__ import annotations

import json
import os
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from genaudit.cli import app
from genaudit.comparison import early_stopping, expand

runner = CliRunner()
EPOCHS = (1, 2, 4, 8, 16, 32, 64)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A real short training run: an MLP on 500 MNIST sample images with 50% of the labels corrupted, saved at
    several epochs. Returns the folder, the audit data (the corrupted labels the model trained on) and the
    model's accuracy on the TRUE labels per epoch (what memorization destroys)."""
    import torch

    folder = tmp_path_factory.mktemp("series")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny models: one thread is faster, and immune to a busy machine
    data = np.load(os.path.join(os.path.dirname(__file__), "..", "genaudit", "sample_data", "mnist_sample.npz"))
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data["y"]))[:500]
    x, y = data["x"][idx], data["y"][idx]
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.5
    noisy[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    np.savez(folder / "train.npz", x=x, y=noisy)
    inputs, targets = torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(noisy)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    true_accuracy = {}
    for epoch in range(1, EPOCHS[-1] + 1):
        for batch in torch.randperm(len(y)).split(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            opt.step()
        if epoch in EPOCHS:
            model.eval()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                true_accuracy[epoch] = float((model(inputs).argmax(1).numpy() == y).mean())
                torch.onnx.export(model, (inputs[:2],), str(folder / f"ckpt_e{epoch}.onnx"), dynamo=False,
                                  input_names=["input"], dynamic_axes={"input": {0: "batch"}})
            model.train()
    return folder, folder / "train.npz", true_accuracy


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def epoch_of(path: str) -> int:
    return int(path.rsplit("_e", 1)[1].split(".")[0])


def test_early_stopping_point_comes_before_memorization(series):
    folder, data, true_accuracy = series
    result = run("compare", folder / "ckpt_e*.onnx", "--data", data, "-f", "json")
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)
    assert [epoch_of(r["model"]) for r in comparison["models"]] == list(EPOCHS)  # natural order, not e1, e16, e2
    # memorization phase: from the first checkpoint after which accuracy on the true labels only falls
    best = max(true_accuracy, key=true_accuracy.get)
    memorizing = [e for e in EPOCHS if e > best]
    assert memorizing, "the run must reach a memorization phase for this test to mean anything"
    assert epoch_of(comparison["early_stopping"]["peak"]) < memorizing[0]
    train_accuracy = [r["clean_accuracy"] for r in comparison["models"]]
    assert train_accuracy[-1] > 0.95  # the late checkpoints fit the corrupted labels
    assert comparison["early_stopping"]["memorization_onset"] is not None


def test_comparison_is_deterministic_and_selection_matches_the_api(series, tmp_path):
    import genaudit

    folder, data, _ = series
    first = run("compare", folder, "--data", data, "--samples", 300, "-f", "json").output
    second = run("compare", folder, "--data", data, "--samples", 300, "-f", "json").output
    assert first == second
    selected = run("compare", folder, "--data", data, "--samples", 300, "--select", "best")
    assert selected.exit_code == 0 and selected.output.strip() == json.loads(first)["selected"]
    api = genaudit.compare([folder], str(data), samples=300)
    assert api["selected"] == json.loads(first)["selected"]
    assert [len(r["drift"]) for r in api["models"]] == [2] * len(EPOCHS)
    assert api["models"][0]["drift"]["previous"] is None
    assert 0.0 <= api["models"][1]["drift"]["previous"]["cka"] <= 1.0


def test_parallel_jobs_give_the_same_comparison(series):
    folder, data, _ = series
    serial = run("compare", folder, "--data", data, "--samples", 200, "-f", "json").output
    parallel = run("compare", folder, "--data", data, "--samples", 200, "-f", "json", "--jobs", 2).output
    assert json.loads(serial)["models"] == json.loads(parallel)["models"]


def test_baseline_gate_passes_and_fails(series, tmp_path):
    folder, data, truth = series
    assert truth[8] > truth[64] + 0.1  # the peak epoch generalizes better than the memorized end
    baseline = tmp_path / "baseline.json"
    assert run("score", folder / "ckpt_e8.onnx", "--data", data, "--json", baseline, "-f", "json").exit_code == 0
    same = run("score", folder / "ckpt_e8.onnx", "--data", data, "--fail-if-worse-than", baseline)
    assert same.exit_code == 0, same.output
    worse = run("score", folder / "ckpt_e64.onnx", "--data", data, "--fail-if-worse-than", baseline)
    assert worse.exit_code == 1 and "worse than the baseline" in worse.output
    tolerant = run("score", folder / "ckpt_e64.onnx", "--data", data, "--fail-if-worse-than", baseline,
                   "--tolerance", 0.5)
    assert tolerant.exit_code == 0
    (tmp_path / "bad.json").write_text("{}")
    assert run("score", folder / "ckpt_e2.onnx", "--data", data, "--fail-if-worse-than",
               tmp_path / "bad.json").exit_code == 2
    # a baseline from another estimator is refused before the audit: exit 2, nothing written
    older = json.loads(baseline.read_text())
    older["estimate"]["model"] -= 1
    (tmp_path / "older.json").write_text(json.dumps(older))
    refused = run("score", folder / "ckpt_e8.onnx", "--data", data, "--fail-if-worse-than", tmp_path / "older.json",
                  "--json", tmp_path / "new.json")
    assert refused.exit_code == 2 and "estimate model: baseline" in refused.output
    assert not (tmp_path / "new.json").exists()


def test_config_file_gives_defaults_and_flags_win(series, tmp_path, monkeypatch):
    from genaudit.cli import configured

    folder, data, _ = series
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.genaudit]\ndata = "{data}"\nsamples = 120\nfail-under = ["ablation=2"]\n'
        "[tool.genaudit.compare]\nsamples = 150\n")
    defaults = configured(tmp_path)
    from_config = run("score", folder / "ckpt_e2.onnx", "-f", "json", default_map=defaults)
    assert from_config.exit_code == 1 and json.loads(from_config.output.split("check failed")[0])["samples"] == 120
    flags = run("score", folder / "ckpt_e2.onnx", "-f", "json", "--samples", 100, "--fail-under", "ablation=0",
                default_map=defaults)
    assert flags.exit_code == 0 and json.loads(flags.output)["samples"] == 100
    compared = run("compare", folder / "ckpt_e1.onnx", folder / "ckpt_e2.onnx", "-f", "json", default_map=defaults)
    assert json.loads(compared.output.split("check failed")[0])["data"]["samples"] == 150
    (tmp_path / "genaudit.yaml").write_text("samples: 90\npreprocess: center\nlayout: flat\n")  # takes precedence
    assert configured(tmp_path)["score"]["samples"] == 90
    card = json.loads(run("score", folder / "ckpt_e2.onnx", "--data", data, "-f", "json",
                          default_map=configured(tmp_path)).output)
    assert card["data"]["preprocess"]["preset"] == "center" and card["model"]["input_layout"] == "flat"
    (tmp_path / "genaudit.yaml").write_text("samples: [unclosed\n")
    from genaudit.errors import GenauditError

    with pytest.raises(GenauditError, match="genaudit.yaml"):
        configured(tmp_path)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.links = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.tables += tag == "table"
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs)


def test_markdown_and_html_reports(series, tmp_path):
    folder, data, _ = series
    page = tmp_path / "compare.html"
    md = run("compare", folder, "--data", data, "--samples", 200, "-f", "markdown", "--html", page)
    assert md.exit_code == 0 and "| # | model |" in md.output and "**selected**" in md.output
    score_page = tmp_path / "score.html"
    assert run("score", folder / "ckpt_e8.onnx", "--data", data, "--layers", "all", "--html", score_page,
               "-f", "json").exit_code == 0
    for path, n_images in ((page, 3), (score_page, 3)):
        parsed = _Collector()
        parsed.feed(path.read_text())
        assert len(parsed.images) == n_images and all(src.startswith("data:image/png;base64,") for src in parsed.images)
        assert parsed.tables >= 1 and parsed.links == []  # self-contained: nothing fetched to view it
    assert "Per layer" in score_page.read_text()


def test_watch_audits_new_checkpoints(series, tmp_path):
    folder, data, _ = series
    watched = tmp_path / "run"
    watched.mkdir()
    for epoch in (1, 2):
        target = watched / f"ckpt_e{epoch}.onnx"
        target.write_bytes((folder / f"ckpt_e{epoch}.onnx").read_bytes())
        os.utime(target, (1, 1))  # written long ago: complete
    result = run("watch", watched, "--data", data, "--samples", 100, "--polls", 1, "--interval", 0)
    assert result.exit_code == 0, result.output
    assert "peak" in result.output and "selected" in result.output
    from genaudit.comparison import Watcher

    watcher = Watcher(watched, str(data), samples=100)
    looks = watcher.poll(interval=0, polls=2)
    first = next(looks)
    assert [epoch_of(r["model"]) for r in first["models"]] == [1, 2]
    assert next(looks) is None  # nothing new on the second look
    assert run("watch", tmp_path / "missing", "--data", data).exit_code == 2


def test_unit_helpers():
    assert early_stopping([0.5, 0.7, 0.6], [0.5, 0.6, 0.9]) == {
        "peak": 1, "memorization_onset": 2, "evidence": "score 0.700 → 0.600 while training accuracy 0.600 → 0.900"}
    assert early_stopping([0.5, 0.7, 0.6], [0.5, 0.6, 0.6])["memorization_onset"] is None  # accuracy stalled
    assert early_stopping([0.5, 0.7, 0.6], [None] * 3)["memorization_onset"] is None


def test_expand_sorts_naturally_and_reports_nothing_found(tmp_path):
    for name in ("step_10.onnx", "step_2.onnx", "step_1.onnx", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand([tmp_path])] == ["step_1.onnx", "step_2.onnx", "step_10.onnx"]
    assert [p.name for p in expand([tmp_path / "step_10.onnx", tmp_path / "step_1.onnx"], "given")] == [
        "step_10.onnx", "step_1.onnx"]
    from genaudit.errors import GenauditError

    with pytest.raises(GenauditError, match="No model files"):
        expand([str(tmp_path / "*.pt2")])


def test_every_measured_standard_error_is_declared_by_its_metric():
    """compare's tie rule reads a metric's standard error from `Metric.error`: every metric declaring one finds
    it in a real scorecard, and no standard error the scorecard measures is left undeclared."""
    from conftest import SAMPLE_MODELS
    from genaudit import audit
    from genaudit.metrics import METRICS
    from genaudit.scorecard import lookup

    card = audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=200)
    declared = {m.name: m.error for m in METRICS if m.error}
    assert {"estimate", "clean_accuracy", "ablation", "neighbours_input"} <= set(declared)
    assert all(lookup(card, path) is not None for path in declared.values()), declared
    measured = {m.name for m in METRICS if lookup(card, m.path.rsplit(".", 1)[0] + ".standard_error") is not None}
    assert measured <= set(declared)
