"""ONNX files as other tools write them: every opset torch exports, a TensorFlow/Keras-style graph (tf2onnx's
channels-last input, Transposes around convs, Reshape -> MatMul + Add -> Softmax, names with ':' and '/'), and
an op onnxruntime does not know. Clean accuracy is compared with a plain onnxruntime run."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from genaudit import audit
from genaudit.cli import app
from genaudit.errors import GenauditError
from genaudit.models import identify, open_model
from genaudit.models.affine import affine_head

RNG = np.random.default_rng(1)
IMAGES = RNG.integers(0, 256, size=(60, 3, 12, 12)).astype(np.uint8)


def _plain(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)


def _labelled(folder, predictions: np.ndarray):
    """Labels agreeing with the plain run two times in three: a wrongly fed model shows a different accuracy."""
    y = predictions.copy()
    y[::3] = (y[::3] + 1) % 5
    np.savez(folder / "data.npz", x=IMAGES, y=y)
    return folder / "data.npz", float(np.mean(predictions == y))


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 20])
def test_every_opset_torch_exports(opset, tmp_path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(150, 5)).eval()
    path = tmp_path / f"opset{opset}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 3, 12, 12),), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    assert onnx.load(str(path)).opset_import[0].version == opset
    data, expected = _labelled(tmp_path, _plain(path, IMAGES.astype(np.float32) / 255))
    card = audit(path, str(data), samples=None, repeats=1)
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert card["layer"]["units"] == 150 and card["layer"]["default"]


def _keras_style(path) -> None:
    """What tf2onnx writes for a Keras Conv2D -> Flatten -> Dense(softmax) on 12x12x3 images."""
    w_conv = RNG.normal(size=(6, 3, 3, 3)).astype(np.float32) * 0.3
    w_dense = RNG.normal(size=(150, 5)).astype(np.float32) * 0.3
    b_dense = RNG.normal(size=(5,)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["input_1:0"], ["conv2d/transpose:0"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["conv2d/transpose:0", "conv2d/kernel:0"], ["conv2d/Conv2D:0"],
                         strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv2d/Conv2D:0"], ["conv2d/Relu_nchw:0"]),
        helper.make_node("Transpose", ["conv2d/Relu_nchw:0"], ["conv2d/Relu:0"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["conv2d/Relu:0", "flatten/Const:0"], ["flatten/Reshape:0"]),
        helper.make_node("MatMul", ["flatten/Reshape:0", "dense/MatMul/ReadVariableOp:0"], ["dense/MatMul:0"]),
        helper.make_node("Add", ["dense/MatMul:0", "dense/BiasAdd/ReadVariableOp:0"], ["dense/BiasAdd:0"]),
        helper.make_node("Softmax", ["dense/BiasAdd:0"], ["dense/Softmax:0"], axis=-1),
    ]
    inits = [numpy_helper.from_array(w_conv, "conv2d/kernel:0"),
             numpy_helper.from_array(np.array([-1, 150], np.int64), "flatten/Const:0"),
             numpy_helper.from_array(w_dense, "dense/MatMul/ReadVariableOp:0"),
             numpy_helper.from_array(b_dense, "dense/BiasAdd/ReadVariableOp:0")]
    graph = helper.make_graph(nodes, "tf2onnx", [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT,
                                                                               ["unk__6", 12, 12, 3])],
                              [helper.make_tensor_value_info("dense/Softmax:0", TensorProto.FLOAT, ["unk__7", 5])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_a_keras_model_converted_by_tf2onnx(tmp_path):
    path = tmp_path / "keras.onnx"
    _keras_style(path)
    x = np.ascontiguousarray(IMAGES.transpose(0, 2, 3, 1)).astype(np.float32) / 255
    data, expected = _labelled(tmp_path, _plain(path, x))
    card = audit(path, str(data), samples=None, repeats=1)
    assert card["model"]["input_layout"] == "nhwc" and card["model"]["output_kind"] == "probabilities"
    assert card["layer"]["name"] == "flatten/Reshape:0" and card["layer"]["units"] == 150
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    graph = open_model(identify(path), None, tmp_path)
    w, b = affine_head(graph, "flatten/Reshape:0")  # MatMul + Add read as one affine head, in closed form
    assert w.shape == (150, 5) and b.shape == (5,)


def test_an_op_onnxruntime_cannot_run_is_refused_with_exit_2(tmp_path):
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("Frobnicate", ["flat"], ["features"], domain="com.example"),
             helper.make_node("MatMul", ["features", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["n", 3, 12, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5])],
                              [numpy_helper.from_array(np.ones((432, 5), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    data, _ = _labelled(tmp_path, np.zeros(len(IMAGES), int))
    with pytest.raises(GenauditError, match="onnxruntime cannot run the model's trunk.*Frobnicate.*standard ONNX ops"):
        audit(path, str(data), samples=None)
    result = CliRunner().invoke(app, ["score", str(path), "--data", str(data)])
    assert result.exit_code == 2 and "Traceback" not in result.output and "Frobnicate" in result.output
