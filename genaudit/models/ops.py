"""The ONNX op vocabulary the graph analysis and the affine-head reader share: which ops pass the class scores
through, which may follow the classifier, which are never layers, and how to read a node's attributes."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper

# Ops that pass the logits through on the way to the output: walked back over when finding the classifier.
PASS_THROUGH = {
    "Softmax", "LogSoftmax", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout",
    "Transpose",
}
# Ops that may follow a classifier whose scores are per position (SqueezeNet, NiN: 1x1 Conv -> ReLU -> global
# pool), or an activation some models put after their last Linear: walked back over too.
AFTER_CLASSIFIER = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
    "ReduceMax", "AveragePool", "MaxPool",
}
# Elementwise ops with one constant operand (bias, scale, temperature) after the classifier: walked back over.
CONSTANT_OPERAND = {"Add", "Sub", "Mul", "Div"}
# Increasing elementwise maps some heads end with (Softmax -> Log: log-probabilities; LogSoftmax -> Exp:
# probabilities): they keep each row's argmax, so they are walked back over too.
MONOTONE = {"Log", "Exp"}
# Ops whose outputs are positive: a Log after them is defined everywhere (and increasing).
POSITIVE = {"Softmax", "Sigmoid", "Exp"}
# Ops whose output is never offered as a layer: constants, shape plumbing, and aliases of their input.
NOT_A_LAYER = {
    "Constant", "Shape", "Size", "ConstantOfShape", "Range", "Equal", "Identity", "Dropout", "Softmax",
    "LogSoftmax", "Squeeze", "Unsqueeze", "Cast", "CastLike",
}
# Ops whose output is offered as a layer only when it is a float tensor of rank >= 2 (else it is shape plumbing).
ONLY_IF_FLOAT = {"Gather", "Concat", "Slice", "Expand", "Where", "Reshape", "Transpose", "Split", "Tile"}
# Ops never treated as constant even when all their inputs are (they draw random numbers).
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
# Ops after the classifier's affine map that leave each row's argmax unchanged (softmax along the class axis).
ARGMAX_SAFE = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Flatten", "Dropout", "Cast"}
# Outputs of these are probabilities / log-probabilities rather than logits.
OUTPUT_KINDS = {"Softmax": "probabilities", "LogSoftmax": "log-probabilities", "Sigmoid": "sigmoid scores"}


def attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    """The value of a node's attribute, or `default` when the node does not set it."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default
# Element-wise non-linearities: the first one's output is a model's first non-linear representation.
ACTIVATIONS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "Tanh", "HardSigmoid",
               "HardSwish", "Softplus", "Mish", "Clip"}

