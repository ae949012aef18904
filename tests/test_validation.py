"""genaudit validate: audits on training data, accuracy on a holdout set, rank correlations."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_mlp
from genaudit.cli import app
from genaudit.validation import correlation_table, rank_correlations, run_of


def quadrant_data(n: int, seed: int):
    """4-class 8x8 images whose class lights one quadrant (as tests/conftest.py's tiny_data)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.integers(0, 60, size=(n, 8, 8))
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 150
    return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """Three short runs of one MLP on 120 images with 0%, 50% and 100% corrupted labels, three checkpoints
    each, plus the training and holdout sets."""
    import torch

    folder = tmp_path_factory.mktemp("zoo")
    torch.set_num_threads(1)  # tiny models: one thread is faster, and immune to a busy machine
    x, y = quadrant_data(120, 0)
    hx, hy = quadrant_data(200, 1)
    np.savez(folder / "train.npz", x=x, y=y)
    np.savez(folder / "holdout.npz", x=hx, y=hy)
    inputs = torch.tensor(x[:, None] / 255.0, dtype=torch.float32)
    rng = np.random.default_rng(0)
    for corruption in (0, 50, 100):
        used = y.copy()
        flip = rng.random(len(y)) < corruption / 100
        used[flip] = (y[flip] + rng.integers(1, 4, flip.sum())) % 4
        model = tiny_mlp(seed=corruption)
        opt = torch.optim.Adam(model.parameters(), lr=0.03)
        for epoch in range(1, 201):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), torch.tensor(used)).backward()
            opt.step()
            if epoch in (5, 20, 200):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(model.eval(), (inputs[:2],), str(folder / f"c{corruption}_e{epoch}.onnx"),
                                      dynamo=False, input_names=["input"], dynamic_axes={"input": {0: "batch"}})
                model.train()
    return folder


def test_validate_end_to_end(tiny_zoo, tmp_path):
    out, page = tmp_path / "study.json", tmp_path / "study.html"
    result = CliRunner().invoke(app, ["validate", str(tiny_zoo / "*.onnx"), "--data", str(tiny_zoo / "train.npz"),
                                      "--holdout", str(tiny_zoo / "holdout.npz"), "--no-labels", "--json", str(out),
                                      "--html", str(page)])
    assert result.exit_code == 0, result.output
    study = json.loads(out.read_text())
    assert len(study["models"]) == 9
    assert {m["run"] for m in study["models"]} == {"c0", "c50", "c100"}
    accuracy = {m["model"].rsplit("/", 1)[1]: m["holdout_accuracy"] for m in study["models"]}
    assert accuracy["c0_e200.onnx"] > 0.9 > accuracy["c100_e200.onnx"]  # the zoo spans generalization
    ablation = study["correlations"]["ablation"]
    assert ablation["n"] == 9 and -1 <= ablation["kendall"] <= 1 and 1 <= ablation["runs"] <= 3
    assert "data:image/png;base64," in page.read_text()
    assert "oriented τ" in result.output
    score = {m["model"].rsplit("/", 1)[1]: m["metrics"]["score"] for m in study["models"]}
    assert score["c100_e200.onnx"] < score["c0_e200.onnx"]  # the memorizing model scores below


def test_score_fitting_script_runs_on_a_study(tiny_zoo, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    study = tmp_path / "study.json"
    assert CliRunner().invoke(app, ["validate", str(tiny_zoo / "*.onnx"), "--data", str(tiny_zoo / "train.npz"),
                                    "--holdout", str(tiny_zoo / "holdout.npz"), "--no-labels",
                                    "--json", str(study)]).exit_code == 0
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"file": p.name, "arch": "mlp", "regularizer": "none"}
                                    for p in tiny_zoo.glob("*.onnx")]))
    spec = tmp_path / "spec.json"
    script = Path(__file__).resolve().parent.parent / "zoo" / "fit_score.py"
    done = subprocess.run([sys.executable, str(script), str(study), str(study), "--manifest", str(manifest),
                           "--write", str(spec)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fitted = json.loads(spec.read_text())
    assert fitted["features"] and all(w >= 0 for w in fitted["weights"].values())


def test_rank_correlation_hand_cases():
    assert rank_correlations([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])["kendall"] == pytest.approx(1.0)
    assert rank_correlations([4, 3, 2, 1], [0.1, 0.2, 0.3, 0.4])["spearman"] == pytest.approx(-1.0)
    # one discordant pair of six: tau = (5 - 1) / 6
    assert rank_correlations([1, 2, 4, 3], [0.1, 0.2, 0.3, 0.4])["kendall"] == pytest.approx(4 / 6)
    assert rank_correlations([1, None, 2], [0.1, 0.2, 0.3])["kendall"] is None  # too few models
    cards = [{"diagnostics": {"steadiness": {"ratio": r}}} for r in (0.9, 0.5, 0.1)]
    table = correlation_table(cards, [0.2, 0.5, 0.9], ["a", "a", "a"])
    assert table["steadiness"]["kendall"] == pytest.approx(-1.0)
    assert table["steadiness"]["oriented_kendall"] == pytest.approx(1.0)  # lower is better: a perfect predictor


def test_run_of_strips_epoch_numbers():
    from pathlib import Path

    assert run_of(Path("mnist_mlp_none_c0_e001.onnx")) == "mnist_mlp_none_c0"
    assert run_of(Path("run3-step_1200.pt")) == "run3-step"
