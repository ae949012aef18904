"""`genaudit suspects`: per-sample suspicion, its table, CSV and HTML, and the scorecard's memorization summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from typer.testing import CliRunner

import genaudit
from conftest import SAMPLE_MODELS
from genaudit.cli import app
from genaudit.diagnostics.memorization import disagreement
from genaudit.suspects import suspects

runner = CliRunner()


def test_disagreement_is_the_share_of_neighbours_with_another_label():
    indices = np.array([[1, 2], [0, 2], [0, 1]])
    labels = np.array([0, 0, 1])
    np.testing.assert_array_equal(disagreement(indices, labels, k=2), [1, 1, 2])  # neighbours with another label
    np.testing.assert_array_equal(disagreement(indices, labels, k=1), [0, 0, 1])


def test_suspicion_sums_integer_counts_so_ties_stay_ties():
    from genaudit.diagnostics.memorization import suspicion

    counts = {"d_input": np.array([3, 1]), "d_early": np.array([1, 2]), "d_features": np.array([2, 3])}
    assert suspicion(counts)[0] == suspicion(counts)[1] == 6 / 30


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """The shipped MNIST sample with 10% of its labels replaced by another class (rows known)."""
    data = np.load(SAMPLE_MODELS.parent / "genaudit" / "sample_data" / "mnist_sample.npz")
    rng = np.random.default_rng(0)
    y = data["y"].copy()
    wrong = rng.choice(len(y), size=len(y) // 10, replace=False)
    y[wrong] = (y[wrong] + rng.integers(1, 10, len(wrong))) % 10
    path = tmp_path_factory.mktemp("flipped") / "flipped.npz"
    np.savez(path, x=data["x"], y=y)
    return path, set(int(i) for i in wrong)


def test_wrong_labels_rank_first(flipped):
    path, wrong = flipped
    result = suspects(SAMPLE_MODELS / "mlp_clean.onnx", str(path), samples=None)
    scores = np.array([r["suspicion"] for r in result["rows"]])
    is_wrong = np.array([r["index"] in wrong for r in result["rows"]])
    assert (np.diff(scores) <= 0).all()  # most suspicious first
    assert sorted(r["index"] for r in result["rows"]) == list(range(1000))  # one row per source row
    # AUROC of suspicion for "this label is wrong" (Mann-Whitney), with the mlp that learned the true labels
    ranks = scores.argsort().argsort() + 1
    auroc = (ranks[is_wrong].sum() - is_wrong.sum() * (is_wrong.sum() + 1) / 2) / (is_wrong.sum() * (~is_wrong).sum())
    assert auroc > 0.9
    top = result["rows"][: len(wrong)]
    assert np.mean([r["suggested"] != r["label"] for r in top]) > 0.8


def test_cli_writes_csv_html_and_refuses_data_without_labels(flipped, tmp_path):
    path, _ = flipped
    out_csv, out_html = tmp_path / "s.csv", tmp_path / "s.html"
    result = runner.invoke(app, ["suspects", str(SAMPLE_MODELS / "mlp_clean.onnx"), "--data", str(path),
                                 "--samples", "300", "--top", "4", "--csv", str(out_csv), "--html", str(out_html)])
    assert result.exit_code == 0, result.output
    with open(out_csv) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 300 and list(table[0]) == ["index", "label", "predicted", "suggested", "suspicion"]
    assert float(table[0]["suspicion"]) >= float(table[-1]["suspicion"])
    page = out_html.read_text()
    assert page.count('<img src="data:image/png;base64,') == 4 and "suggested" in page
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.load(path)["x"][:50])
    refused = runner.invoke(app, ["suspects", str(SAMPLE_MODELS / "mlp_clean.onnx"), "--data", str(unlabelled)])
    assert refused.exit_code == 2 and "labels" in refused.output
    as_json = runner.invoke(app, ["suspects", str(SAMPLE_MODELS / "mlp_clean.onnx"), "--data", str(path),
                                  "--samples", "200", "-f", "json"])
    assert json.loads(as_json.output)["samples"] == 200


def test_scorecard_memorization_summary(flipped):
    path, _ = flipped
    card = genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", str(path), samples=None)
    summary = card["diagnostics"]["memorization"]
    # this model learned the true labels, so it memorized none of the 100 wrong ones it is audited against; the
    # estimator's floor on models that memorized nothing is a few percent (docs/suspects.md: 1-5%)
    assert summary["fraction"] < 0.08 and 0.05 < summary["suspect_fraction"] < 0.5
    assert "memorization" not in genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", str(path), samples=300,
                                                labels=False)["diagnostics"]


def test_suspicion_across_checkpoints_with_the_last_ones_shifted_doubt_hand_case():
    """Mean suspicion 0.4, mean doubt 0.3 and the last checkpoint's shifted doubt 0.8: (0.4 + 0.3 + 0.8) / 3 = 0.5."""
    from genaudit.diagnostics.memorization import across_checkpoints

    suspicions = [np.array([0.2, 0.0]), np.array([0.6, 0.0])]
    confidences = [np.array([0.9, 1.0]), np.array([0.5, 1.0])]
    np.testing.assert_allclose(across_checkpoints(suspicions, confidences, np.array([0.8, 0.0])), [0.5, 0.0])


def test_a_run_with_weak_judges_reads_the_last_checkpoints_shifted_doubt(noisy):
    """With weak judges a run's suspicion is (mean neighbour suspicion + mean doubt + the last checkpoint's shifted
    doubt) / 3, each from the single-model documents (their neighbour suspicion from the disagreement counts)."""
    first, last = SAMPLE_MODELS / "mlp_random.onnx", SAMPLE_MODELS / "mlp_clean.onnx"
    data = str(noisy / "noisy.npz")
    alone = {path: {r["index"]: r for r in suspects(path, data, samples=200)["rows"]} for path in (first, last)}
    run = suspects([first, last], data, samples=200, order="given")
    assert run["summary"]["shifted"]
    neighbours = lambda r: sum(r[k] for k in ("d_input", "d_patches", "d_early", "d_features")) / 40  # noqa: E731
    for row in run["rows"]:
        a, b = alone[first][row["index"]], alone[last][row["index"]]
        assert row["shifted_doubt"] == b["shifted_doubt"]
        expected = ((neighbours(a) + neighbours(b)) / 2 + (a["doubt"] + b["doubt"]) / 2 + b["shifted_doubt"]) / 3
        assert row["suspicion"] == pytest.approx(expected)
    assert "with the last one's doubt of each label on the image moved 2 pixels each way" in runner.invoke(
        app, ["suspects", str(first), str(last), "--order", "given", "--data", data, "--samples", "200",
              "-f", "markdown"]).output


def test_suspicion_across_checkpoints_hand_case():
    """Two checkpoints: suspicions 0.2 and 0.6 (mean 0.4), probabilities of the given label 0.9 and 0.5 (mean doubt
    0.3): (0.4 + 0.3) / 2 = 0.35. A second sample no checkpoint doubts and no neighbour outvotes scores 0. The
    checkpoints' order does not matter."""
    from genaudit.diagnostics.memorization import across_checkpoints

    suspicions = [np.array([0.2, 0.0]), np.array([0.6, 0.0])]
    confidences = [np.array([0.9, 1.0]), np.array([0.5, 1.0])]
    np.testing.assert_allclose(across_checkpoints(suspicions, confidences), [0.35, 0.0])
    np.testing.assert_array_equal(across_checkpoints(suspicions[::-1], confidences[::-1]),
                                  across_checkpoints(suspicions, confidences))
    with pytest.raises(ValueError):
        across_checkpoints(suspicions, confidences[:1])


def test_a_runs_checkpoints_are_judged_together():
    """Given two checkpoints, each row's suspicion is across_checkpoints of the two models' own suspicions and
    doubts (from their single-model documents, matched by index), its doubt is their mean doubt, and the
    prediction and summary are the last checkpoint's ('natural' order: by the numbers in the names; 'given': as
    listed)."""
    first, last = SAMPLE_MODELS / "mlp_random.onnx", SAMPLE_MODELS / "mlp_clean.onnx"
    alone = {path: {r["index"]: r for r in suspects(path, "sample", samples=300)["rows"]} for path in (first, last)}
    run = suspects([first, last], "sample", samples=300, order="given")
    assert [c["path"] for c in run["checkpoints"]] == [str(first), str(last)] and run["model"]["path"] == str(last)
    assert run["summary"]["checkpoints"] == 2
    for row in run["rows"]:
        a, b = alone[first][row["index"]], alone[last][row["index"]]
        expected = ((a["suspicion"] + b["suspicion"]) / 2 + (a["doubt"] + b["doubt"]) / 2) / 2
        assert row["suspicion"] == pytest.approx(expected)
        assert row["doubt"] == pytest.approx((a["doubt"] + b["doubt"]) / 2)
        assert row["predicted"] == b["predicted"]
    assert np.mean([r["doubt"] for r in alone[last].values()]) < 0.2  # the clean model fits the sample's labels
    assert [c["path"] for c in suspects([last, first], "sample", samples=50)["checkpoints"]] == [str(last), str(first)]


def test_cli_judges_a_runs_checkpoints(tmp_path):
    """Checkpoints by glob, in natural order (epoch 2 before epoch 10), named in the report."""
    for epoch, model in ((2, "mlp_random.onnx"), (10, "mlp_clean.onnx")):
        (tmp_path / f"run_e{epoch}.onnx").write_bytes((SAMPLE_MODELS / model).read_bytes())
    result = runner.invoke(app, ["suspects", str(tmp_path / "run_e*.onnx"), "--data", "sample", "--samples", "200",
                                 "-f", "json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert [Path(c["path"]).name for c in found["checkpoints"]] == ["run_e2.onnx", "run_e10.onnx"]
    shown = runner.invoke(app, ["suspects", str(tmp_path / "run_e2.onnx"), str(tmp_path / "run_e10.onnx"),
                                "--data", "sample", "--samples", "200", "-f", "markdown"])
    assert shown.exit_code == 0 and "(and 1 earlier checkpoint)" in shown.output
    assert "the run's doubt of each label over 2 checkpoints" in shown.output
    given = runner.invoke(app, ["suspects", str(tmp_path / "run_e10.onnx"), str(tmp_path / "run_e2.onnx"),
                                "--order", "given", "--data", "sample", "--samples", "200", "-f", "json"])
    assert json.loads(given.output)["model"]["path"].endswith("run_e2.onnx")  # as listed: the last given is shown
    wrong = runner.invoke(app, ["suspects", str(tmp_path / "run_e2.onnx"), "--order", "newest", "--data", "sample"])
    assert wrong.exit_code == 2 and "--order must be 'natural' or 'given'" in wrong.output


def test_the_summary_says_when_the_neighbours_are_weak_judges():
    """The judges' consistency is the patch vote's (the same two disjoint votes of the labels); below 0.5 the
    summary says the shares overstate, above it says nothing of it."""
    from genaudit.render import suspects_summary

    card = genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample", samples=300)
    judges = card["diagnostics"]["memorization"]["judges"]
    assert judges == {"space": "patches",
                      "vote_consistency": card["diagnostics"]["neighbours"]["patches"]["vote_consistency"]}
    summary = {"fraction": 0.2, "suspect_fraction": 0.9, "threshold": 0.5}
    weak = suspects_summary({"summary": {**summary, "judges": {"space": "patches", "vote_consistency": 0.27}}})
    assert "weak judges" in weak and "27% of samples in the patch space" in weak and "the share they outvote" in weak
    assert "the memorized share is validated on MNIST-like images only" in weak
    assert "weak" not in suspects_summary({"summary": {**summary, "judges": {"space": "input",
                                                                               "vote_consistency": 0.8}}})


def test_the_judges_are_the_input_space_without_a_patch_space(tmp_path):
    """Samples that are not images have no patch space: the judges are the input space's votes, the same two
    disjoint votes as the input vote's consistency."""
    data = np.load(SAMPLE_MODELS.parent / "genaudit" / "sample_data" / "mnist_sample.npz")
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=data["x"].reshape(len(data["x"]), -1)[:300], y=data["y"][:300])
    card = genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", str(flat), layout="flat")
    assert "patches" not in card["diagnostics"]["neighbours"]
    assert card["diagnostics"]["memorization"]["judges"] == {
        "space": "input", "vote_consistency": card["diagnostics"]["neighbours"]["input"]["vote_consistency"]}


def test_shifted_moves_the_image_and_repeats_the_edge():
    """A 3 x 3 image moved one pixel each way: the row or column moved out is gone, the edge fills the gap."""
    from genaudit.diagnostics.memorization import shifted

    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(shifted(x, 1, 0)[0, 0], [[1, 2, 3], [1, 2, 3], [4, 5, 6]])  # down
    np.testing.assert_array_equal(shifted(x, -1, 0)[0, 0], [[4, 5, 6], [7, 8, 9], [7, 8, 9]])  # up
    np.testing.assert_array_equal(shifted(x, 0, 1)[0, 0], [[1, 1, 2], [4, 4, 5], [7, 7, 8]])  # right
    np.testing.assert_array_equal(shifted(x, 0, -1)[0, 0], [[2, 3, 3], [5, 6, 6], [8, 9, 9]])  # left
    np.testing.assert_array_equal(shifted(x, 0, 0), x)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (2, 3, 7, 6), elements=st.floats(-2, 2, width=32)), st.integers(-3, 3), st.integers(-3, 3))
def test_shifted_is_the_image_offset_inside_and_adds_no_value(x, dy, dx):
    """Inside, the shifted image is the image offset by (dy, dx); every value comes from the same image and
    channel (edge pixels repeated), so a shift never widens the range."""
    from genaudit.diagnostics.memorization import shifted

    out = shifted(x, dy, dx)
    assert out.shape == x.shape
    h, w = x.shape[2:]
    rows, cols = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    source_rows, source_cols = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    np.testing.assert_array_equal(out[:, :, rows, cols], x[:, :, source_rows, source_cols])
    for n in range(2):
        for ch in range(3):
            assert set(out[n, ch].ravel()) <= set(x[n, ch].ravel())


def test_given_probability_hand_case():
    """Logits [0, ln 3] give probabilities 1/4 and 3/4; probabilities are read as they are."""
    from genaudit.diagnostics.memorization import given_probability

    logits = np.array([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    np.testing.assert_allclose(given_probability(logits, np.array([0, 1])), [0.25, 0.75])
    np.testing.assert_array_equal(given_probability(np.array([[0.2, 0.8]]), np.array([1]), "probabilities"), [0.8])


def test_with_shifts_and_weak_hand_cases():
    """(suspicion + shifted doubt) / 2: 0.2 and 0.6 give 0.4. Weak judges: consistency below 0.5 only."""
    from genaudit.diagnostics.memorization import weak, with_shifts

    np.testing.assert_allclose(with_shifts(np.array([0.2, 0.0]), np.array([0.6, 0.0])), [0.4, 0.0])
    assert weak({"space": "patches", "vote_consistency": 0.49})
    assert not weak({"space": "patches", "vote_consistency": 0.5})
    assert not weak(None) and not weak({"space": "input", "vote_consistency": None})


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The shipped MNIST sample with 70% of its labels replaced by another class: the neighbours are weak
    judges there (two disjoint votes of such labels rarely agree)."""
    data = np.load(SAMPLE_MODELS.parent / "genaudit" / "sample_data" / "mnist_sample.npz")
    rng = np.random.default_rng(1)
    y = data["y"].copy()
    wrong = rng.choice(len(y), size=int(len(y) * 0.7), replace=False)
    y[wrong] = (y[wrong] + rng.integers(1, 10, len(wrong))) % 10
    folder = tmp_path_factory.mktemp("noisy")
    np.savez(folder / "noisy.npz", x=data["x"], y=y)
    np.savez(folder / "flat.npz", x=data["x"].reshape(len(y), -1), y=y)
    return folder


def test_one_model_reads_its_doubt_on_shifted_images_where_the_judges_are_weak(noisy):
    """With weak judges, each row's shifted_doubt is 1 - the model's softmax probability of the given label,
    averaged over the image moved 2 pixels down, up, right and left (computed here with onnxruntime on images
    shifted by hand), and its suspicion is (neighbour disagreement + shifted doubt) / 2."""
    import onnxruntime as ort

    result = suspects(SAMPLE_MODELS / "cnn_clean.onnx", str(noisy / "noisy.npz"), samples=200)
    assert result["summary"]["shifted"] and result["summary"]["judges"]["vote_consistency"] < 0.5
    data = np.load(noisy / "noisy.npz")
    index = np.array([r["index"] for r in result["rows"]])
    x, y = data["x"][index].astype(np.float32) / 255, data["y"][index]
    views = [np.concatenate([x[:, :, :1], x[:, :, :1], x[:, :, :-2]], axis=2),  # down
             np.concatenate([x[:, :, 2:], x[:, :, -1:], x[:, :, -1:]], axis=2),  # up
             np.concatenate([x[..., :1], x[..., :1], x[..., :-2]], axis=3),  # right
             np.concatenate([x[..., 2:], x[..., -1:], x[..., -1:]], axis=3)]  # left
    session = ort.InferenceSession(str(SAMPLE_MODELS / "cnn_clean.onnx"), providers=["CPUExecutionProvider"])
    doubt = np.zeros(len(y))
    for view in views:
        logits = session.run(None, {session.get_inputs()[0].name: view})[0].astype(np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        doubt += 1 - (p / p.sum(axis=1, keepdims=True))[np.arange(len(y)), y]
    np.testing.assert_allclose([r["shifted_doubt"] for r in result["rows"]], doubt / 4, atol=1e-5)
    for row in result["rows"]:
        counts = [row[k] for k in ("d_input", "d_patches", "d_early", "d_features")]
        assert row["suspicion"] == pytest.approx((sum(counts) / 40 + row["shifted_doubt"]) / 2)
    shown = runner.invoke(app, ["suspects", str(SAMPLE_MODELS / "cnn_clean.onnx"), "--data", str(noisy / "noisy.npz"),
                                "--samples", "200", "-f", "markdown"]).output
    assert "doubt of each label on the image moved 2 pixels each way" in shown
    assert "(neighbour disagreement > 0.5)" in shown  # the outvoted share reads the neighbours, not the shifts


def test_progress_counts_the_shifted_passes(noisy):
    """The progress reaches its end once per phase: the trunk pass (200 of 200), then the four shifted passes make
    the whole 5 x 200, never going back in samples done."""
    seen = []
    suspects(SAMPLE_MODELS / "cnn_clean.onnx", str(noisy / "noisy.npz"), samples=200, batch_size=64,
             progress=lambda done, total: seen.append((done, total)))
    assert (200, 200) in seen and seen[-1] == (1000, 1000)
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))


def test_good_judges_and_flat_samples_leave_the_suspicion_to_the_neighbours(noisy):
    """No shifts where the neighbours are good judges (the shipped sample, one model or a run) or where the
    samples are not images (nothing to shift)."""
    for result in (suspects(SAMPLE_MODELS / "cnn_clean.onnx", "sample", samples=200),
                   suspects([SAMPLE_MODELS / "mlp_random.onnx", SAMPLE_MODELS / "mlp_clean.onnx"], "sample",
                            samples=200, order="given"),
                   suspects(SAMPLE_MODELS / "mlp_clean.onnx", str(noisy / "flat.npz"), samples=200, layout="flat")):
        assert not result["summary"]["shifted"] and all("shifted_doubt" not in r for r in result["rows"])
    assert suspects(SAMPLE_MODELS / "mlp_clean.onnx", str(noisy / "flat.npz"), samples=200,
                    layout="flat")["summary"]["judges"]["vote_consistency"] < 0.5  # weak, but nothing to shift
