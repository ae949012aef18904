"""Convolutions that see maps of a few positions, run as one matrix product over the batch.

A convolution is a linear map of its input map. Where the map has so few positions that the map's matrix is no
larger than the kernel (a 3x3 kernel on a 2x2 or 1x1 map: layer4 of a ResNet on 32x32 images), onnxruntime's
convolution is slow: its cost per image does not fall with more images per call (`bench/conv_head.py`). The same
map as `Flatten -> MatMul -> Add -> Reshape` does the useful multiply-adds as one matrix product over the batch:
the head after ResNet-18's layer3 runs 4x faster (docs/performance.md). The products are the same; their sum runs
in another order, so the outputs may differ in their last bits.

Only conv-layer heads are rewritten (`genaudit.models.runtime.head_model`), where the head runs on every variant
of the features; a convolution whose shapes are not inferred, whose weights are not constant float32, or with
auto_pad SAME, is kept as it is.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

    from genaudit.models.graph import OnnxGraph


def conv_matrix(weight: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                strides: tuple[int, ...], pads: tuple[int, ...], dilations: tuple[int, ...], group: int) -> np.ndarray:
    """The convolution of a (C, *in_spatial) map with `weight` (O, C / group, *kernel) as a matrix M
    (C * prod(in_spatial), O * prod(out_spatial)): flatten(conv(x)) = flatten(x) @ M, both flattened row-major.
    `pads` holds the begin pads of every spatial axis, then the end pads (ONNX's order); `out_shape` is
    (O, *out_spatial). Every entry is a weight or zero, copied, never summed."""
    out_channels, per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    channels, spatial = in_shape[0], in_shape[1:]
    out_spatial = out_shape[1:]
    per_out = out_channels // group
    matrix = np.zeros((channels, *spatial, out_channels, *out_spatial), np.float32)
    for position in itertools.product(*(range(n) for n in out_spatial)):
        for tap in itertools.product(*(range(k) for k in kernel)):
            source = tuple(p * s - pad + t * d for p, s, pad, t, d in zip(position, strides, pads, tap, dilations))
            if not all(0 <= i < n for i, n in zip(source, spatial)):
                continue  # the tap meets the padding
            for g in range(group):
                ins, outs = slice(g * per_group, (g + 1) * per_group), slice(g * per_out, (g + 1) * per_out)
                matrix[(ins, *source, outs, *position)] = weight[(outs, slice(None), *tap)].T
    return matrix.reshape(channels * int(np.prod(spatial)), out_channels * int(np.prod(out_spatial)))


def _attributes(node: onnx.NodeProto, rank: int) -> dict | None:
    """The Conv node's strides, pads, dilations and group with ONNX's defaults, None for auto_pad SAME_*."""
    from onnx import helper

    found = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    auto_pad = found.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        return None
    pads = (0,) * (2 * rank) if auto_pad == "VALID" else tuple(found.get("pads", (0,) * (2 * rank)))
    return {"strides": tuple(found.get("strides", (1,) * rank)), "pads": pads,
            "dilations": tuple(found.get("dilations", (1,) * rank)), "group": int(found.get("group", 1))}


def as_products(graph: OnnxGraph, nodes: list[onnx.NodeProto]) -> tuple[list[onnx.NodeProto], list]:
    """`nodes` with every Conv on a map of few positions (its matrix no larger than its kernel) replaced by
    Flatten -> MatMul -> (Add) -> Reshape, and the initializers the replacements read (see the module docstring).
    Convolutions whose shapes or weights are not known are kept."""
    from onnx import helper, numpy_helper

    if not any(n.op_type == "Conv" for n in nodes):
        return nodes, []  # no shape inference for heads without convolutions (every default feature layer)
    out, initializers = [], []
    for index, node in enumerate(nodes):
        replaced = _replacement(graph, node, f"genaudit_matmul_{index}")
        if replaced is None:
            out.append(node)
            continue
        matrix, bias, shape, name = replaced
        initializers += [numpy_helper.from_array(matrix, f"{name}_matrix"),
                         numpy_helper.from_array(np.array([-1, *shape], np.int64), f"{name}_shape")]
        out += [helper.make_node("Flatten", [node.input[0]], [f"{name}_flat"], axis=1),
                helper.make_node("MatMul", [f"{name}_flat", f"{name}_matrix"], [f"{name}_product"])]
        last = f"{name}_product"
        if bias is not None:
            initializers.append(numpy_helper.from_array(bias, f"{name}_bias"))
            out.append(helper.make_node("Add", [last, f"{name}_bias"], [f"{name}_sum"]))
            last = f"{name}_sum"
        out.append(helper.make_node("Reshape", [last, f"{name}_shape"], [node.output[0]]))
    return out, initializers


def _replacement(graph: OnnxGraph, node: onnx.NodeProto, name: str):
    """(matrix, bias repeated per output position or None, output shape without the batch, name) for a Conv node
    worth rewriting, else None."""
    if node.op_type != "Conv":
        return None
    in_shape, out_shape = graph.inferred_shape(node.input[0]), graph.inferred_shape(node.output[0])
    weight = graph.constant_value(node.input[1])
    if in_shape is None or out_shape is None or weight is None or None in in_shape[1:] + out_shape[1:]:
        return None
    has_bias = len(node.input) > 2 and bool(node.input[2])
    bias = graph.constant_value(node.input[2]) if has_bias else None
    if weight.dtype != np.float32 or (has_bias and (bias is None or bias.dtype != np.float32)):
        return None  # float16 and other types keep their convolution (the matrix product would mix types)
    attributes = _attributes(node, len(in_shape) - 2)
    if attributes is None or int(np.prod(in_shape[1:])) * int(np.prod(out_shape[1:])) > weight.size:
        return None  # auto_pad SAME, or a map large enough that its matrix outgrows the kernel
    matrix = conv_matrix(weight, in_shape[1:], out_shape[1:], **attributes)
    positions = int(np.prod(out_shape[2:]))
    repeated = None if bias is None else np.repeat(bias, positions)
    return matrix, repeated, tuple(out_shape[1:]), name


__all__ = ["as_products", "conv_matrix"]
