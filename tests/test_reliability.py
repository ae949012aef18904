"""Bad input gets one clear message and exit 2, before the expensive work: non-finite data and outputs, labels
that are not class indices, too few samples, damaged model files, unwritable output paths. Heads written other
ways (Softmax -> Log, scaling by a constant, Sigmoid) are read as the classifier they are; with several outputs,
the one with the data's classes is chosen and a near-chance accuracy names --output."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import onnx
import pytest
from conftest import SAMPLE_MODELS, assert_user_error
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from genaudit import audit, sanity
from genaudit.cli import app
from genaudit.data import load_data
from genaudit.errors import GenauditError
from genaudit.models import OnnxGraph, identify, open_model
from genaudit.models.affine import affine_head

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, size=(60, 1, 8, 8)).astype(np.uint8)


# ---- 1. non-finite data and outputs --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_when_loaded(value, tmp_path, trained_mlp):
    x = IMAGES.astype(np.float32) / 255
    x[7, 0, 3, 3] = value
    x[12, 0, 0, 0] = value
    with pytest.raises(GenauditError, match=r"non-finite.* 2 samples \(the first at index 7\) of 60"):
        load_data((x, np.arange(60) % 4))
    with pytest.raises(GenauditError, match=r"1 sample \(the first at index 7\)"):
        load_data({"x": np.where(np.arange(60)[:, None, None, None] == 7, value, IMAGES / 255)})
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 4)
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tmp_path / "d.npz"),
                      "non-finite", "2 samples", "index 7", "np.nan_to_num")


def test_float64_beyond_float32_counts_as_non_finite():
    x = IMAGES.astype(np.float64)
    x[3, 0, 0, 0] = 1e300
    with pytest.raises(GenauditError, match="too large for float32.*index 3"):
        load_data((x, None))


def _mlp_graph(path, w2: np.ndarray, post=(), outputs=None, extra_heads=()):
    """input 1x8x8 -> Flatten -> Gemm(64->16) -> Relu ('feat') -> MatMul(16->C) + Add ('z') -> `post` nodes
    (op, constant or None, attributes) -> 'scores'; `extra_heads` adds (name, weights) Gemm outputs on 'feat',
    listed before 'scores' when `outputs` says so."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(16, 64)).astype(np.float32) * 0.3
    b2 = rng.normal(size=(w2.shape[1],)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["feat"]),
             helper.make_node("MatMul", ["feat", "w2"], ["mm"]),
             helper.make_node("Add", ["mm", "b2"], ["z"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2"),
             numpy_helper.from_array(b2, "b2")]
    current = "z"
    for i, (op, const, kw) in enumerate(post):
        inputs = [current]
        if const is not None:
            inits.append(numpy_helper.from_array(np.asarray(const, np.float32), f"c{i}"))
            inputs.append(f"c{i}")
        nodes.append(helper.make_node(op, inputs, [f"p{i}"], **kw))
        current = f"p{i}"
    nodes.append(helper.make_node("Identity", [current], ["scores"]))
    declared = {"scores": helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", w2.shape[1]])}
    for name, w in extra_heads:
        nodes.append(helper.make_node("Gemm", ["feat", f"{name}_w"], [name]))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        declared[name] = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", w.shape[1]])
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [declared[name] for name in (outputs or declared)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _plain(path, x: np.ndarray, output: int = 0) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[output]


def test_non_finite_model_outputs_on_finite_data_are_refused(tmp_path):
    w2 = np.random.default_rng(0).normal(size=(16, 4))
    w2[5, 2] = np.nan  # diverged training: one weight is NaN
    path = _mlp_graph(tmp_path / "nan.onnx", w2)
    np.savez(tmp_path / "d.npz", x=IMAGES, y=np.arange(60) % 4)
    assert_user_error(run("score", path, "--data", tmp_path / "d.npz"),
                      "output (class scores) holds NaN or infinite values", "of 60 audited samples",
                      "training diverged")
    # the log of raw scores is NaN wherever a score is negative
    log_of_logits = _mlp_graph(tmp_path / "log.onnx", np.random.default_rng(0).normal(size=(16, 4)),
                               post=[("Log", None, {})])
    assert_user_error(run("score", log_of_logits, "--data", tmp_path / "d.npz"), "NaN or infinite")


def test_check_finite_outputs_names_count_and_first_sample():
    logits = np.zeros((10, 3), np.float32)
    logits[4, 1] = np.inf
    logits[8, 0] = np.nan
    with pytest.raises(GenauditError, match="2 of 10 audited samples \\(the first is sample 4\\)"):
        sanity.check_finite_outputs(logits)
    features = np.zeros((10, 2, 3, 3), np.float32)
    features[9, 1, 2, 2] = np.nan
    with pytest.raises(GenauditError, match="feature layer holds NaN.*first is sample 9"):
        sanity.check_finite_outputs(np.zeros((10, 3)), features)
    sanity.check_finite_outputs(np.zeros((10, 3)), np.zeros((10, 4)))


# ---- 2. labels that are not class indices --------------------------------------------------------------------

@pytest.mark.parametrize("labels, message", [
    (np.r_[np.zeros(5), 3.5, np.ones(54)], r"not whole numbers in 1 sample \(the first at index 5\): 3.5"),
    (np.r_[np.zeros(9), -1, np.ones(50)].astype(np.int64), r"negative labels .*index 9\): -1"),
    (np.r_[np.zeros(2), np.nan, np.nan, np.ones(56)], r"NaN or inf labels in 2 samples \(the first at index 2\)"),
    (np.array(["cat", "dog"] * 30), "text values"),
    (np.eye(4)[np.arange(60) % 4], r"shape \(60, 4\).*one-hot.*argmax"),
    (np.full(60, 2.0**40), "far beyond any class count"),
])
def test_labels_that_are_not_class_indices_are_refused(labels, message, tmp_path, trained_mlp):
    with pytest.raises(GenauditError, match=message):
        load_data((IMAGES, labels))
    if labels.dtype.kind != "U":
        np.savez(tmp_path / "d.npz", x=IMAGES, y=labels)
        assert_user_error(run("score", trained_mlp["onnx"], "--data", tmp_path / "d.npz"), "class index")


def test_integral_float_labels_are_class_indices(trained_mlp, tmp_path):
    y = (np.arange(60) % 4).astype(np.float64)
    data = load_data((IMAGES, y), samples=None)
    assert data.y.dtype == np.int64 and data.y.tolist() == (np.arange(60) % 4).tolist()
    assert load_data((IMAGES, y[:, None].astype(np.float32)), samples=None).y.tolist() == data.y.tolist()
    np.savez(tmp_path / "d.npz", x=IMAGES, y=y)
    assert run("score", trained_mlp["onnx"], "--data", tmp_path / "d.npz", "-f", "json").exit_code == 0


# ---- 3. too few samples --------------------------------------------------------------------------------------

def test_too_few_samples_are_refused(trained_mlp, tmp_path):
    np.savez(tmp_path / "d.npz", x=IMAGES[:3], y=np.array([0, 1, 2]))
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tmp_path / "d.npz"),
                      "Too few samples", "3 samples over 3 labelled classes", "at least 6", "--samples")
    np.savez(tmp_path / "one.npz", x=IMAGES[:1])
    assert_user_error(run("score", trained_mlp["onnx"], "--data", tmp_path / "one.npz"), "Too few samples")
    with pytest.raises(GenauditError, match="at least 8"):
        sanity.check_sample_size(np.array([0, 0, 1, 1, 2, 2, 3]))
    sanity.check_sample_size(np.array([0, 0, 1, 1, 2, 2, 3, 3]))
    sanity.check_sample_size(np.array([0, 0, 0, 0, 0, 0, 0, 3]))  # 2 per class on average is enough
    with pytest.raises(GenauditError, match="predicted classes"):
        sanity.check_sample_size(np.array([1]), labels_used=False)


def test_small_sample_warning():
    assert sanity.small_sample_warning(1000, 10) is None and sanity.small_sample_warning(100, 20) is None
    warning = sanity.small_sample_warning(60, 4)
    assert "Only 60 samples" in warning and "interval is wide" in warning and "--samples" in warning
    assert "2.0 per class" in sanity.small_sample_warning(200, 100)


# ---- 4. damaged and unreadable model files -------------------------------------------------------------------

def _with_garbage_pickle(source, target):
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for name in archive.namelist():
            out.writestr(name, b"\x80\x05garbage, not a pickle" if name.endswith("data.pkl") else archive.read(name))
    return target


@pytest.mark.parametrize("make, phrase", [
    (lambda p: _with_garbage_pickle(SAMPLE_MODELS / "mlp_clean.pickled.pth", p / "garbage.pt"), "data.pkl is damaged"),
    (lambda p: _with_garbage_pickle(SAMPLE_MODELS / "mlp_clean.state_dict.pth", p / "garbage.pth"),
     "data.pkl is damaged"),
    (lambda p: (p / "trunc.pt2").write_bytes((SAMPLE_MODELS / "mlp_clean.pt2").read_bytes()[:5000]) and p / "trunc.pt2",
     "copy it again"),
    (lambda p: (p / "trunc.onnx").write_bytes((SAMPLE_MODELS / "mlp_clean.onnx").read_bytes()[:3000])
     and p / "trunc.onnx", "copy it again"),
    (lambda p: (p / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096)) and p / "random.pt",
     "not a readable"),
    (lambda p: (p / "empty.onnx").write_bytes(b"") or p / "empty.onnx", "is empty (0 bytes)"),
    (lambda p: (p / "notes.onnx").write_text("a model, honest\n") and p / "notes.onnx", "not a readable model"),
])
def test_damaged_model_files_give_one_message(make, phrase, tmp_path):
    path = make(tmp_path)
    assert_user_error(run("score", path, "--data", "sample"), phrase)
    assert_user_error(run("layers", path, "--input-shape", "1,28,28"), phrase)


def test_a_zip_with_a_damaged_member_gives_one_message(tmp_path):
    data = bytearray((SAMPLE_MODELS / "mlp_clean.pt").read_bytes())
    with zipfile.ZipFile(SAMPLE_MODELS / "mlp_clean.pt") as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("constants.pkl"))
    data[info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 2] ^= 0xFF  # a byte of its data
    (tmp_path / "crc.pt").write_bytes(bytes(data))
    result = run("score", tmp_path / "crc.pt", "--data", "sample")
    assert result.exit_code in (0, 2) and "Traceback" not in result.output, result.output


def test_a_model_under_another_extension_is_read_by_its_bytes(tmp_path):
    (tmp_path / "model.pt").write_bytes((SAMPLE_MODELS / "mlp_clean.onnx").read_bytes())
    assert run("score", tmp_path / "model.pt", "--data", "sample", "--samples", 100, "-f", "json").exit_code == 0
    assert run("layers", tmp_path / "model.pt").exit_code == 0


# ---- 5. output paths, checked before any work -----------------------------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Make every command's work fail loudly: a path check must refuse before it."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the work started before the output paths were checked")

    import genaudit.comparison
    import genaudit.pipeline
    import genaudit.validation

    for module, name in ((genaudit.pipeline, "audit"), (genaudit.comparison, "compare"),
                         (genaudit.validation, "validate")):
        monkeypatch.setattr(module, name, forbidden)


def _bad_paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    return [(tmp_path / "folder", "it is a folder"),
            (tmp_path / "afile" / "card.json", "is a file, not a folder"),
            (tmp_path / "afile" / "deeper" / "card.json", "is a file, not a folder"),
            (tmp_path / "missing" / "card.json", "does not exist")]


@pytest.mark.parametrize("command", ["score", "compare", "validate"])
@pytest.mark.parametrize("option", ["--json", "--html"])
def test_unwritable_output_paths_are_refused_before_any_work(command, option, tmp_path, no_work):
    model = SAMPLE_MODELS / "mlp_clean.onnx"
    extra = ["--holdout", "sample"] if command == "validate" else []
    for path, problem in _bad_paths(tmp_path):
        assert_user_error(run(command, model, "--data", "sample", *extra, option, path),
                          f"Cannot write {option} {path}", problem)
    assert_user_error(run(command, model, "--data", "sample", *extra, option, model), "input files")
    assert not list(tmp_path.glob("**/*.tmp"))


def test_json_and_html_must_differ(tmp_path, no_work):
    out = tmp_path / "same"
    assert_user_error(run("score", SAMPLE_MODELS / "mlp_clean.onnx", "--data", "sample", "--json", out, "--html", out),
                      "same file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_refused(tmp_path, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_user_error(run("score", SAMPLE_MODELS / "mlp_clean.onnx", "--data", "sample", "--json",
                              locked / "c.json"), "permission denied")
    finally:
        locked.chmod(0o700)


# ---- 6. heads written other ways ------------------------------------------------------------------------------

HEADS = {
    "softmax then log": ([("Softmax", None, {"axis": 1}), ("Log", None, {})], "log-probabilities"),
    "divided by a constant": ([("Div", 2.5, {})], "logits"),
    "multiplied by a constant": ([("Mul", 0.5, {})], "logits"),
    "per-class temperature, softmax, log": ([("Div", [[1, 2, 3, 4, 5]], {}), ("Softmax", None, {"axis": -1}),
                                             ("Log", None, {})], "log-probabilities"),
    "sigmoid": ([("Sigmoid", None, {})], "sigmoid scores"),
    "sigmoid then scaled": ([("Sigmoid", None, {}), ("Div", 3.0, {})], "sigmoid scores"),
    "softmax as percent": ([("Softmax", None, {"axis": 1}), ("Mul", 100.0, {})], "probabilities"),
    "log-softmax then exp": ([("LogSoftmax", None, {"axis": 1}), ("Exp", None, {})], "probabilities"),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_heads_written_other_ways_are_read_as_their_classifier(name, tmp_path):
    post, kind = HEADS[name]
    path = _mlp_graph(tmp_path / "head.onnx", np.random.default_rng(1).normal(size=(16, 5)), post=post)
    graph = OnnxGraph(onnx.load(str(path)))
    assert graph.default_layer_name() == "feat" and graph.output_kind == kind
    assert affine_head(graph, "feat") is not None  # closed form: the post-processing keeps each row's argmax
    predictions = _plain(path, IMAGES.astype(np.float32) / 255).argmax(1)
    y = predictions.copy()
    y[::3] = (y[::3] + 1) % 5  # a wrongly read head would show another accuracy
    card = audit(path, (IMAGES, y), samples=None, repeats=1)
    assert card["clean_accuracy"] == pytest.approx(float(np.mean(predictions == y)), abs=1e-12)
    assert card["layer"]["name"] == "feat" and card["layer"]["default"] and card["model"]["output_kind"] == kind


def test_a_rescaling_that_reverses_the_order_is_not_read_as_argmax_safe(tmp_path):
    path = _mlp_graph(tmp_path / "neg.onnx", np.random.default_rng(1).normal(size=(16, 5)),
                      post=[("Softmax", None, {"axis": 1}), ("Mul", -1.0, {})])
    graph = OnnxGraph(onnx.load(str(path)))
    assert graph.default_layer_name() == "feat" and affine_head(graph, "feat") is None


# ---- 7. several outputs --------------------------------------------------------------------------------------

def _two_heads(tmp_path):
    """A 3-class auxiliary head listed first, then the 10-class head ('scores')."""
    rng = np.random.default_rng(2)
    return _mlp_graph(tmp_path / "two.onnx", rng.normal(size=(16, 10)), extra_heads=[("aux", rng.normal(size=(16, 3)))],
                      outputs=["aux", "scores"])


def test_the_labels_steer_the_default_output_to_one_with_enough_classes(tmp_path):
    path = _two_heads(tmp_path)
    file = identify(path)
    assert open_model(file, (1, 8, 8), tmp_path).output_name == "aux"  # first classifier output
    assert open_model(file, (1, 8, 8), tmp_path, classes=10).output_name == "scores"
    assert open_model(file, (1, 8, 8), tmp_path, classes=3).output_name == "aux"
    assert open_model(file, (1, 8, 8), tmp_path, classes=11).output_name == "aux"  # none has enough: refused later
    assert open_model(file, (1, 8, 8), tmp_path, output="aux", classes=10).output_name == "aux"  # asked for
    assert OnnxGraph(onnx.load(str(path))).output_sizes() == [3, 10]


def test_near_chance_accuracy_with_several_outputs_names_output_and_sizes(tmp_path):
    graph = OnnxGraph(onnx.load(str(_two_heads(tmp_path))))
    labels = np.arange(100) % 3
    advice = sanity.output_advice(graph, 0.34, labels)
    assert "--output" in advice and "0: 'aux' (3 classes, audited), 1: 'scores' (10 classes)" in advice
    assert sanity.output_advice(graph, 0.9, labels) is None and sanity.output_advice(graph, 0.34, None) is None
    one = OnnxGraph(onnx.load(str(_mlp_graph(tmp_path / "one.onnx", np.ones((16, 3))))))
    assert sanity.output_advice(one, 0.34, labels) is None


def test_labels_beyond_the_chosen_outputs_classes_name_output(tmp_path):
    np.savez(tmp_path / "d.npz", x=IMAGES, y=np.arange(60) % 10)
    result = run("score", _two_heads(tmp_path), "--data", tmp_path / "d.npz", "--output", "aux")
    assert_user_error(result, "3 classes", "--output")
    assert run("score", tmp_path / "two.onnx", "--data", tmp_path / "d.npz", "--output", "scores",
               "-f", "json").exit_code == 0


def test_text_that_looks_like_markup_in_a_message_is_printed_as_is():
    result = run("score", SAMPLE_MODELS / "mlp_clean.onnx", "--data", "[/x]")
    assert_user_error(result, "Unknown data '[/x]'")


def test_first_line_of_an_error_message():
    from genaudit.errors import first_line

    assert first_line(ValueError("bad graph\n  at node 3\nTraceback ...")) == "bad graph"
    assert first_line(ValueError("\n  padded\nmore"), 3) == "pad"
    assert first_line(RuntimeError("")) == "RuntimeError"  # an empty message once raised IndexError here
    assert first_line(ValueError("x" * 500), None) == "x" * 500
