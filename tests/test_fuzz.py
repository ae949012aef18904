"""Property-based fuzzing (Hypothesis, derandomized): whatever data arrays or model files come in, genaudit ends
with exit 0, 1 or 2 and, for 2, one message; never a traceback. Bad data (non-finite values, labels that are
not class indices) is never accepted silently.

Kept small (a tiny ONNX model, tens of samples, few examples) so the file runs in about a minute on 2 cores."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import SAMPLE_MODELS
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from genaudit.cli import app
from genaudit.data import load_data
from genaudit.errors import GenauditError

runner = CliRunner()
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_outcome(result):
    """Exit 0, 1 or 2; a message for 2; no traceback, no exception escaping the command."""
    if currently_in_test_context():
        event(f"exit {result.exit_code}")  # shown by --hypothesis-show-statistics
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output, repr(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert "error:" in result.output and len(result.output.strip()) > 20, result.output


# ---- data arrays ---------------------------------------------------------------------------------------------

SHAPES = [(16,), (4, 4), (1, 4, 4), (4, 4, 1), (3, 4, 4), (4, 4, 3), (2,), (1, 1, 1, 1), (), (4, 0)]
DTYPES = ["uint8", "int16", "int64", "float16", "float32", "float64", "bool", "complex64", "U2"]
LABELS = ["none", "int", "integral-float", "fraction", "negative", "nan", "text", "one-hot", "column", "short",
          "empty-classes", "huge", "bool", "object"]


@st.composite
def arrays(draw):
    """(x, y, what is wrong with them): x of a drawn shape and dtype with NaN/inf/huge values placed at drawn
    samples, y of a drawn kind."""
    n = draw(st.integers(0, 30))
    shape, dtype = draw(st.sampled_from(SHAPES)), draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    raw = rng.random((n, *shape)) * 255
    x = raw.astype(str) if dtype == "U2" else (raw > 128 if dtype == "bool" else raw.astype(dtype))
    wrong = {"x"} if dtype in ("U2", "complex64") or shape in ((), (4, 0)) else set()
    if x.dtype.kind == "f" and n and x[0].size:
        for index, value in draw(st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from([np.nan, np.inf, -np.inf,
                                                                                             1e300])), max_size=3)):
            with np.errstate(over="ignore"):  # 1e300 is inf in float16/32, and beyond float32 in float64
                x.reshape(n, -1)[index, rng.integers(x[0].size)] = value
            wrong.add("non-finite")
    kind = draw(st.sampled_from(LABELS))
    classes = np.arange(n) % 4
    y = {
        "none": None, "int": classes, "integral-float": classes.astype(float), "fraction": classes + 0.5,
        "negative": classes - 1, "nan": np.where(classes == 1, np.nan, classes), "text": classes.astype(str),
        "one-hot": np.eye(4)[classes], "column": classes[:, None], "short": classes[: max(n - 1, 0)],
        "empty-classes": np.where(classes < 2, 0, 3), "huge": classes * 2**40, "bool": classes == 1,
        "object": classes.astype(object),
    }[kind]
    if (n >= 1 and kind in ("fraction", "text", "one-hot", "negative", "short")) or \
            (n >= 2 and kind in ("nan", "huge")):
        wrong.add("labels")
    return x, y, wrong


@given(arrays())
@settings(max_examples=400, **FUZZ)
def test_load_data_accepts_good_arrays_and_refuses_bad_ones_with_a_message(case):
    x, y, wrong = case
    try:
        data = load_data((x, y), samples=None)
    except GenauditError as exc:
        assert str(exc).strip()
        event("refused")
        return
    event("loaded")
    assert not wrong, f"accepted data with {wrong}"
    batch = next(data.batches(64, "flat"), None)
    assert batch is None or np.isfinite(batch).all()
    assert data.y is None or (data.y.dtype == np.int64 and len(data.y) == len(data.x) and (data.y >= 0).all())


def _flat_model(path, inputs: int = 16, classes: int = 4):
    """A tiny ONNX classifier of flat vectors: Gemm -> Relu -> Gemm."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["input", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["feat"]),
             helper.make_node("Gemm", ["feat", "w2"], ["logits"])]
    inits = [numpy_helper.from_array(rng.normal(size=(inputs, 8)).astype(np.float32) * 0.1, "w1"),
             numpy_helper.from_array(rng.normal(size=(8, classes)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", inputs])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def flat_model(tmp_path_factory):
    return _flat_model(tmp_path_factory.mktemp("fuzz") / "flat.onnx")


@given(arrays(), st.sampled_from([[], ["--no-labels"], ["--samples", "12"]]))
@settings(max_examples=40, **FUZZ)
def test_score_on_fuzzed_data_ends_cleanly(flat_model, tmp_path_factory, case, flags):
    x, y, wrong = case
    path = tmp_path_factory.mktemp("data") / "d.npz"
    try:
        np.savez(path, x=x) if y is None else np.savez(path, x=x, y=y)
    except ValueError:  # object arrays cannot be saved without pickle: nothing to audit
        return
    result = run("score", flat_model, "--data", path, "-f", "json", *flags)
    assert_clean_outcome(result)
    if wrong:
        assert result.exit_code == 2, result.output
    if result.exit_code == 0:
        card = json.loads(result.output)
        assert card["samples"] <= len(x) and np.isfinite(card["score"]["value"])


# ---- model files ---------------------------------------------------------------------------------------------

ONNX_BYTES = (SAMPLE_MODELS / "mlp_clean.onnx").read_bytes()
PT2_BYTES = (SAMPLE_MODELS / "mlp_clean.pt2").read_bytes()
EXTENSIONS = [".onnx", ".pt", ".pt2", ".pth", ".bin", ""]


@st.composite
def mutations(draw, size: int, flip_from: int = 0):
    """How to damage a file of `size` bytes: ('truncate', offset) or ('flip', [(offset, xor mask), ...]) with
    offsets from `flip_from` on, and the extension to save it under."""
    kind = draw(st.sampled_from(["truncate", "flip"]))
    if kind == "truncate":
        change = draw(st.integers(0, size - 1))
    else:
        change = draw(st.lists(st.tuples(st.integers(flip_from, size - 1), st.integers(1, 255)), min_size=1,
                               max_size=4))
    return kind, change, draw(st.sampled_from(EXTENSIONS))


def _damaged(original: bytes, mutation, folder):
    kind, change, extension = mutation
    data = bytearray(original[:change] if kind == "truncate" else original)
    if kind == "flip":
        for offset, mask in change:
            data[offset] ^= mask
    path = folder / f"model{extension}"
    path.write_bytes(bytes(data))
    return path


@given(mutations(len(ONNX_BYTES)))
@settings(max_examples=60, **FUZZ)
def test_damaged_onnx_files_end_cleanly(tmp_path_factory, mutation):
    path = _damaged(ONNX_BYTES, mutation, tmp_path_factory.mktemp("onnx"))
    assert_clean_outcome(run("score", path, "--data", "sample", "--samples", 50, "-f", "json", "--repeats", 1))
    assert_clean_outcome(run("layers", path, "--input-shape", "1,28,28"))


# the archive's structure (graph json, sample inputs, zip directory) is in its last ~20 kB, after the weights
@given(mutations(len(PT2_BYTES), flip_from=len(PT2_BYTES) - 22_000))
@settings(max_examples=8, **FUZZ)
def test_damaged_torch_export_archives_end_cleanly(tmp_path_factory, mutation):
    path = _damaged(PT2_BYTES, mutation, tmp_path_factory.mktemp("pt2"))
    assert_clean_outcome(run("score", path, "--data", "sample", "--samples", 50, "-f", "json", "--repeats", 1))
    assert_clean_outcome(run("layers", path, "--input-shape", "1,28,28"))


def test_a_file_under_every_extension_ends_cleanly(tmp_path):
    for name, original in (("onnx", ONNX_BYTES), ("pt2", PT2_BYTES)):
        for extension in EXTENSIONS:
            path = tmp_path / f"{name}-as{extension or '-nothing'}"
            path.write_bytes(original)
            result = run("layers", path, "--input-shape", "1,28,28")
            assert_clean_outcome(result)
            assert result.exit_code == 0, result.output  # the format is told by the bytes, not the name
