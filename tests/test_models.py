"""Model sources: formats, layer detection, trunk/head split, refusals."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import export_all, tiny_mlp
from genaudit import audit
from genaudit.errors import GenauditError
from genaudit.models import OnnxGraph, identify, open_model, cut_at


def splitter_for(path, shape=(1, 8, 8), tmp_cache=None):
    return open_model(identify(path), shape, tmp_cache)


def test_all_four_formats_give_the_same_layer_and_scores(trained_mlp, tiny_data, tmp_path):
    cards = {fmt: audit(path, str(tiny_data), samples=None) for fmt, path in trained_mlp.items()}
    reference = cards["onnx"]
    assert reference["clean_accuracy"] > 0.9  # the tiny model really learned the task
    for fmt, card in cards.items():
        assert card["layer"]["shape"] == [16] and card["layer"]["op"] == "Relu", fmt
        assert card["clean_accuracy"] == reference["clean_accuracy"], fmt
        for metric in ("ablation", "noise"):
            assert card["diagnostics"][metric]["auc"] == pytest.approx(reference["diagnostics"][metric]["auc"],
                                                                       abs=1e-4), (fmt, metric)
            assert card["diagnostics"][metric]["curve"]["accuracy"] == pytest.approx(
                reference["diagnostics"][metric]["curve"]["accuracy"], abs=1e-4)
    assert {c["model"]["format"] for c in cards.values()} == {"onnx", "torchscript", "torch.export"}


def test_trunk_and_head_reproduce_the_model_at_every_layer(cnn_paths, tmp_path):
    graph = splitter_for(cnn_paths["onnx"], tmp_cache=tmp_path)
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype(np.float32)
    layers = graph.layers()
    assert [lay.name for lay in layers if lay.default] == [graph.default_layer_name()]
    assert len(layers) >= 4
    for lay in layers:
        cut = cut_at(graph, lay.name)
        features, logits = cut.trunk(x)
        assert features.shape[1:] == tuple(lay.shape)
        np.testing.assert_allclose(cut.head(features), logits, atol=1e-5)


def test_default_layer_is_the_classifier_input(cnn_paths, tmp_path):
    graph = splitter_for(cnn_paths["onnx"], tmp_cache=tmp_path)
    default = next(lay for lay in graph.layers() if lay.default)
    assert default.op == "Flatten" and default.shape == (24,)  # fc's input: 6 channels x 2 x 2, flattened


def test_probability_outputs_are_recognised_and_predict_the_same(tmp_path, tiny_data):
    import torch

    example = torch.zeros(2, 1, 8, 8)
    plain = export_all(tiny_mlp(seed=1), example, tmp_path, "plain")
    probs = export_all(tiny_mlp(seed=1, softmax=True), example, tmp_path, "probs")
    a = audit(plain["onnx"], str(tiny_data))
    b = audit(probs["script"], str(tiny_data))
    assert b["model"]["output_kind"] == "probabilities" and a["model"]["output_kind"] == "logits"
    assert b["layer"]["shape"] == a["layer"]["shape"]
    assert b["diagnostics"]["ablation"]["curve"] == a["diagnostics"]["ablation"]["curve"]


def test_fixed_batch_onnx_is_batched_transparently(tmp_path, tiny_data):
    import torch

    model = tiny_mlp(seed=2).eval()
    fixed = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(fixed), dynamo=False, input_names=["input"])
    dynamic = export_all(model, torch.zeros(2, 1, 8, 8), tmp_path, "dyn")["onnx"]
    a, b = audit(fixed, str(tiny_data)), audit(dynamic, str(tiny_data))
    assert a["diagnostics"]["ablation"]["auc"] == pytest.approx(b["diagnostics"]["ablation"]["auc"], abs=1e-6)


def _matmul_add_model(path):
    """A hand-built ONNX classifier using MatMul + Add (as TensorFlow exporters write it) and a Softmax."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 5)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["feat"]),
             helper.make_node("MatMul", ["feat", "w2"], ["z"]), helper.make_node("Add", ["z", "b2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    proto = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(proto, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_matmul_add_classifier_and_fixed_batch_declaration(tmp_path):
    path = tmp_path / "tf_like.onnx"
    _matmul_add_model(path)
    graph = splitter_for(path, tmp_cache=tmp_path)
    assert graph.default_layer_name() == "feat"
    assert graph.output_kind == "probabilities"
    cut = cut_at(graph, None)
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    features, probs = cut.trunk(x)  # batch 7 through a graph declared with batch 1
    np.testing.assert_allclose(cut.head_runner(features)[0], probs, atol=1e-6)
    # the head in closed form gives the logits before the softmax: the same argmax
    assert cut.affine is not None
    np.testing.assert_array_equal(cut.head(features).argmax(1), probs.argmax(1))


def test_a_cut_inside_a_skip_connection_is_not_offered(tmp_path):
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["a", "x"], ["s"]),
             helper.make_node("MatMul", ["s", "w"], ["out"])]
    proto = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4])], [w])
    path = tmp_path / "skip.onnx"
    onnx.save(helper.make_model(proto, opset_imports=[helper.make_opsetid("", 17)]), path)
    graph = OnnxGraph(onnx.load(path))
    names = [lay.name for lay in graph.layers()]
    assert "s" in names and "a" not in names
    with pytest.raises(GenauditError, match="skip connection"):
        graph.resolve_layer("a")


def test_pickled_module_and_state_dict_are_refused_without_unpickling(tmp_path, monkeypatch):
    import pickle

    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    torch.save(model, tmp_path / "whole.pth")
    torch.save(model.state_dict(), tmp_path / "weights.pth")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("genaudit must not unpickle")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(GenauditError, match="pickled nn.Module.*never unpickles"):
        identify(tmp_path / "whole.pth")
    with pytest.raises(GenauditError, match="only weights"):
        identify(tmp_path / "weights.pth")
