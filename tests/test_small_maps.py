"""Convolutions on maps of a few positions as matrix products (`genaudit.models.small_maps`): the matrix is the
convolution, the rewritten head computes what the original does, and only small maps are rewritten."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from genaudit.models.graph import OnnxGraph
from genaudit.models.runtime import head_model
from genaudit.models.small_maps import as_products, conv_matrix


def onnx_conv(x: np.ndarray, weight: np.ndarray, **attributes) -> np.ndarray:
    """onnxruntime's Conv of x with weight (no bias)."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_matrix_of_a_3x3_convolution_on_a_2x2_map_by_hand():
    # one channel in and out, stride 2, pad 1: the single output sees the map through the kernel's bottom-right 2x2
    weight = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    matrix = conv_matrix(weight, (1, 2, 2), (1, 1, 1), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), group=1)
    np.testing.assert_array_equal(matrix[:, 0], [4, 5, 7, 8])


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 3), groups=st.sampled_from([1, 2]), side=st.integers(1, 3), kernel=st.integers(1, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 1), dilation=st.integers(1, 2), dims=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_the_matrix_is_the_convolution(channels, groups, side, kernel, stride, pad, dilation, dims, seed):
    reach = dilation * (kernel - 1) + 1
    if side + 2 * pad < reach:
        return  # no output position
    rng = np.random.default_rng(seed)
    c, o = channels * groups, 2 * groups
    weight = rng.standard_normal((o, channels, *(kernel,) * dims)).astype(np.float32)
    x = rng.standard_normal((5, c, *(side,) * dims)).astype(np.float32)
    attributes = {"strides": [stride] * dims, "pads": [pad] * (2 * dims), "dilations": [dilation] * dims,
                  "group": groups}
    expected = onnx_conv(x, weight, **attributes)
    matrix = conv_matrix(weight, x.shape[1:], expected.shape[1:], strides=(stride,) * dims, pads=(pad,) * (2 * dims),
                         dilations=(dilation,) * dims, group=groups)
    np.testing.assert_allclose(x.reshape(len(x), -1) @ matrix, expected.reshape(len(x), -1), rtol=1e-5, atol=1e-5)
    # every entry is a weight copied, or zero: nothing summed
    assert set(np.unique(matrix[matrix != 0])) <= set(np.unique(weight))


@pytest.fixture(scope="module")
def small_map_cnn(tmp_path_factory):
    """A CNN on 8x8 images whose last convolutions see a 2x2 map (3x3, stride 1: 16 > 9 positions, kept) and then
    a 2x2 map to 1x1 (3x3, stride 2: 4 <= 9, rewritten), exported to ONNX."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),     # 4x4
                          nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),     # 2x2: the cut
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),               # 2x2
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),    # 1x1
                          nn.Flatten(), nn.Linear(16, 4)).eval()
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
    return path


def test_the_rewritten_head_computes_what_the_original_does(small_map_cnn):
    graph = OnnxGraph(onnx.load(str(small_map_cnn)))
    layer = next(lay.name for lay in graph.layers() if lay.shape == (8, 2, 2) and lay.op == "Relu")  # the first
    rewritten = onnx.load_from_string(head_model(graph, layer))
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Conv") == 1 and ops.count("MatMul") == 1  # the 2x2 -> 2x2 one kept, the 2x2 -> 1x1 one not
    original = head_model(graph, layer, products=False)
    assert [n.op_type for n in onnx.load_from_string(original).graph.node].count("Conv") == 2
    x = np.maximum(np.random.default_rng(0).standard_normal((200, 8, 2, 2)), 0).astype(np.float32)
    outputs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {layer: x})[0]
               for m in (original, rewritten.SerializeToString())]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    assert (outputs[1].argmax(1) == outputs[0].argmax(1)).all()


def test_heads_without_convolutions_are_untouched():
    class NoShapes:  # shape inference would fail the test: a head without Conv never asks for shapes
        def inferred_shape(self, name):
            raise AssertionError("no shapes needed")

    nodes = [helper.make_node("Gemm", ["f", "w", "b"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    assert as_products(NoShapes(), nodes) == (nodes, [])


class Shapes:
    """What `as_products` asks of a graph: inferred shapes and constant values, given."""

    def __init__(self, shapes: dict, constants: dict) -> None:
        self.shapes, self.constants = shapes, constants

    def inferred_shape(self, name):
        return self.shapes.get(name)

    def constant_value(self, name):
        return self.constants.get(name)


@pytest.mark.parametrize("case, rewritten", [("small", True), ("float16", False), ("same", False), ("large", False),
                                             ("weights from the input", False), ("bias unknown", False)])
def test_only_small_float32_maps_with_known_weights_are_rewritten(case, rewritten):
    weight = np.ones((4, 2, 3, 3), np.float16 if case == "float16" else np.float32)
    side = 4 if case == "large" else 2  # 4x4 -> 2x2: 16 x 4 positions x 2 x 4 channels > 72 weights
    shapes = {"x": (1, 2, side, side), "y": (1, 4, side // 2, side // 2)}
    constants = {} if case == "weights from the input" else {"w": weight}
    if case != "bias unknown":
        constants["b"] = np.zeros(4, np.float32)
    attributes = {"auto_pad": "SAME_UPPER"} if case == "same" else {"pads": [1, 1, 1, 1]}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], **attributes)
    nodes, initializers = as_products(Shapes(shapes, constants), [node])
    assert ([n.op_type for n in nodes] == ["Flatten", "MatMul", "Add", "Reshape"]) == rewritten
    assert (nodes == [node] and initializers == []) != rewritten
