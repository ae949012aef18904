"""The head of a cut in closed form: when everything from the layer to the output is one affine map, its weights
and bias are read from the graph, and constant bias/scale/temperature ops after it are folded into them, so
ablation and noise curves are one matrix product (`F @ (mask * W)`) instead of onnxruntime runs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from genaudit.models.ops import (
    ARGMAX_SAFE,
    CONSTANT_OPERAND,
    MONOTONE,
    OUTPUT_KINDS,
    POSITIVE,
    attr,
)

if TYPE_CHECKING:
    from genaudit.models.graph import OnnxGraph

Affine = tuple[np.ndarray, np.ndarray]  # (W, b): scores = flatten(features) @ W + b


def affine_head(graph: OnnxGraph, layer: str) -> Affine | None:
    """(W, b) such that argmax(output) = argmax(flatten(layer) @ W + b), when the head is one Gemm or MatMul
    with constant weights, then only constant biases and scales (Add/Sub/Mul/Div by a constant scalar or
    per-class vector, folded into W and b exactly) and ops that keep each row's argmax (softmax, sigmoid, Exp,
    Log of positive scores, a constant shift or positive rescaling after them); else None."""
    nodes = [n for n in graph.head_nodes(layer) if not all(o in graph.constants for o in n.output if o)]
    current, wb, argmax_only = layer, None, False
    positive = False  # whether the scores so far are positive (after Softmax, Sigmoid, Exp): Log keeps their order
    for node in nodes:
        op = node.op_type
        if [i for i in node.input if i and i not in graph.constants] != [current]:
            return None  # not a single chain from the layer to the output
        if wb is None:  # before the classifier: only aliases of the layer
            if op in ("Gemm", "MatMul"):
                wb = _classifier(graph, node, layer) if node.input[0] == current else None
                if wb is None:
                    return None
            elif not (op in ("Identity", "Dropout") or (op == "Flatten" and attr(node, "axis", 1) == 1)):
                return None
        elif op in CONSTANT_OPERAND and not argmax_only:
            wb = _fold(graph, node, current, *wb)
            if wb is None:
                return None
        elif op in CONSTANT_OPERAND:  # after a non-linear map: only a shift or a positive rescaling keeps argmax
            c = graph._scalar_operand(node)
            if c is None:
                return None
            positive = positive and (op in ("Mul", "Div") or (op == "Add" and c >= 0))
        elif op in MONOTONE and (op == "Exp" or positive):
            argmax_only, positive = True, op == "Exp"
        elif op in ARGMAX_SAFE and attr(node, "axis", 1) in (1, -1):
            argmax_only = argmax_only or op in OUTPUT_KINDS
            positive = op in POSITIVE or (positive and op not in OUTPUT_KINDS)
        else:
            return None
        current = node.output[0]
    if wb is None or current != graph.output_name:
        return None
    return wb


def _classifier(graph: OnnxGraph, node: onnx.NodeProto, layer: str) -> Affine | None:
    """(W, b) of the Gemm or MatMul `node`, whose first operand is the layer (or an alias of it), when its
    weights and bias are constant and it computes flatten(layer) @ W + b; else None."""
    op = node.op_type
    if op == "Gemm" and attr(node, "transA", 0):
        return None
    w = graph.constant_value(node.input[1])
    if w is None or w.ndim != 2:
        return None
    w = w.astype(np.float64)
    if op == "Gemm":
        w = (w.T if attr(node, "transB", 0) else w) * attr(node, "alpha", 1.0)
    b = np.zeros(w.shape[1])
    if op == "Gemm" and len(node.input) > 2 and node.input[2]:
        b = _per_class(graph.constant_value(node.input[2]), w.shape[1])
        if b is None:
            return None
        b = b * attr(node, "beta", 1.0)
    # a MatMul over the last axis of a feature map is not flatten(layer) @ W (checked when shapes were inferred
    # already: inference is too slow on big models to run for every cut)
    size = graph.inferred_shape(layer) if graph.shapes_inferred else None
    if size is not None and None not in size[1:] and math.prod(size[1:]) != w.shape[0]:
        return None
    return w, b


def _fold(graph: OnnxGraph, node: onnx.NodeProto, current: str, w: np.ndarray, b: np.ndarray) -> Affine | None:
    """(W, b) with the Add/Sub/Mul/Div by a constant that `node` applies to `current` (the scores so far) folded
    in exactly; None when the constant is not one value or one value per class, or divides by the scores."""
    other = next(i for i in node.input if i and i != current)
    c = _per_class(graph.constant_value(other), w.shape[1])
    if c is None:
        return None
    first = node.input[0] == current
    if node.op_type == "Add":
        return w, b + c
    if node.op_type == "Sub":
        return (w, b - c) if first else (-w, c - b)
    if node.op_type == "Mul":
        return w * c, b * c
    return (w / c, b / c) if first else None  # Div


def _per_class(value: np.ndarray | None, classes: int) -> np.ndarray | None:
    """A constant that broadcasts against (batch, classes) scores as one value per class, else None."""
    if value is None:
        return None
    value = np.asarray(value, np.float64)
    if value.size not in (1, classes) or (value.ndim == 2 and value.shape[0] != 1) or value.ndim > 2:
        return None
    return np.broadcast_to(value.reshape(-1), (classes,)).copy()
