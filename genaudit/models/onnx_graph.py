"""Split an ONNX classifier around one layer: a trunk (input -> features, logits) and a head (features -> logits).

Every model format ends up here (TorchScript and torch.export programs are converted to ONNX first), so the
audit gives the same numbers whatever format a model was saved in, and runs on onnxruntime, the fastest
CPU runtime available for all of them.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from genaudit.errors import GenauditError
from genaudit.heads import AffineHead, Head

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


@dataclass(frozen=True)
class Layer:
    """A tensor of the graph where the model can be cut: everything after it depends on it alone."""

    name: str           # ONNX tensor name, accepted by --layer
    op: str             # the op that produces it
    shape: tuple        # per-sample shape (batch dimension dropped); None entries are unknown
    default: bool = False

    @property
    def units(self) -> int | None:
        """Number of units: channels for conv maps (C,H,W), features for vectors."""
        return self.shape[0] if self.shape else None


def _batch_free(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make dim 0 of every graph input/output symbolic and drop stale value_info (fixed batch-1 exports).
    Changes the model in place (it is ours: freshly loaded) and returns it."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    return model


class OnnxSplitter:
    """Knows an ONNX classifier's graph: its candidate layers, its default feature layer, and how to cut it."""

    def __init__(self, model: onnx.ModelProto, output: str | None = None):
        self.model = _batch_free(model)
        graph = self.model.graph
        self._init_names = {t.name for t in graph.initializer}
        self.inputs = [i for i in graph.input if i.name not in self._init_names]
        if len(self.inputs) != 1:
            raise GenauditError(
                f"The model has {len(self.inputs)} inputs ({', '.join(i.name for i in self.inputs)}); genaudit audits "
                "image classifiers with exactly one input tensor. Export a wrapper that takes a single input."
            )
        if not graph.output:
            raise GenauditError("The model graph has no output. Re-export it with its logits as output.")
        self.input_name = self.inputs[0].name
        self._producer = {o: n for n in graph.node for o in n.output}
        self._constants = _constant_tensors(graph, self._init_names)
        self.output_names = [o.name for o in graph.output]
        self.output_index = _choose_output(self.output_names, output,
                                           lambda name: self._classifier_input(name) is not None)
        self.output_name = self.output_names[self.output_index]

    @functools.cached_property
    def _inferred(self) -> dict[str, tuple[int, tuple | None]]:
        """Inferred (element type, shape) of the graph's tensors (batch dim included; shape None when unknown,
        element type 0 when unknown); only computed to list layers."""
        inferred = self.model
        batch = self.inputs[0].type.tensor_type.shape.dim[:1]
        # With a concrete batch of 1 and data propagation, shapes computed at run time (view(x.size(0), -1))
        # resolve too; the symbolic batch is put back afterwards.
        for concrete, data_prop in ((True, True), (False, True), (False, False)):
            if concrete and batch:
                batch[0].dim_value = 1
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, data_prop=data_prop)
                break
            except Exception:  # shape inference is a nicety; cuts work without it
                continue
            finally:
                if concrete and batch:
                    batch[0].dim_param = "batch"
        found = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            t = vi.type.tensor_type
            shape = (tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
                     if t.HasField("shape") else None)
            found[vi.name] = (t.elem_type, shape)
        return found

    @property
    def _shapes(self) -> dict[str, tuple]:
        """Inferred shapes of the graph's tensors (batch dim included), where known."""
        return {name: shape for name, (_, shape) in self._inferred.items() if shape is not None}

    # ---- graph queries -------------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        """Declared per-sample input shape (batch dropped); None for unknown dims."""
        dims = self.inputs[0].type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)[1:]

    @property
    def output_kind(self) -> str:
        """'logits', 'probabilities', 'log-probabilities', 'sigmoid scores', or 'embedding' (an L2-normalized
        output: not class scores), from the op that produces the output."""
        name = self.output_name
        while name in self._producer:
            node = self._producer[name]
            if node.op_type in OUTPUT_KINDS:
                return OUTPUT_KINDS[node.op_type]
            if node.op_type == "LpNormalization" or (node.op_type == "Div" and self._is_norm(node.input[1])):
                return "embedding"
            if node.op_type not in PASS_THROUGH:
                return "logits"
            name = node.input[0]
        return "logits"

    def _is_norm(self, name: str) -> bool:
        """Whether a tensor is a vector norm (ReduceL2, or Sqrt of a sum of squares), possibly clamped or
        broadcast: what F.normalize and L2-normalized embeddings divide by."""
        while name in self._producer and name not in self._constants:
            node = self._producer[name]
            if node.op_type in ("ReduceL2", "Sqrt"):
                return True
            if node.op_type not in ("Clip", "Max", "Add", "Expand", "Unsqueeze", "Reshape", "Identity"):
                return False
            name = node.input[0]
        return False

    def _data_input(self, node: onnx.NodeProto) -> str | None:
        """The input of a Gemm/MatMul that carries data (not weights)."""
        data = [i for i in node.input[:2] if i and i not in self._constants]
        return data[0] if len(data) == 1 else None

    def default_layer_name(self) -> str:
        """The representation that feeds the final classification layer: the data input of the last Gemm/MatMul
        (or of a 1x1 Conv whose per-position scores are pooled, as in SqueezeNet) on the way to the output."""
        found = self._classifier_input(self.output_name)
        if found is None:
            raise GenauditError(
                "Could not find the final classification layer (a Gemm or MatMul, or a 1x1 Conv before a global "
                "pool, feeding the output through Softmax/Flatten/Reshape/Identity/bias/activation only). Pass the "
                "feature layer explicitly with --layer NAME; `genaudit layers MODEL` lists the candidates."
            )
        return found

    def _classifier_input(self, output: str) -> str | None:
        """The data input of the classifier that produces `output` (see default_layer_name), or None."""
        name = output
        seen = set()
        while name in self._producer and name not in seen:
            seen.add(name)
            node = self._producer[name]
            op = node.op_type
            if op in PASS_THROUGH or op in AFTER_CLASSIFIER:
                name = node.input[0]
            elif op in CONSTANT_OPERAND:
                data = [i for i in node.input if i and i not in self._constants]
                if len(data) != 1:
                    break
                name = data[0]
            elif op in ("Gemm", "MatMul"):
                return self._data_input(node)
            elif op == "Conv" and self._is_pointwise_conv(node):
                return node.input[0]
            else:
                break
        return None

    def _is_pointwise_conv(self, node: onnx.NodeProto) -> bool:
        """A Conv with constant weights, a 1x1 kernel and no grouping: a per-position affine classifier."""
        if len(node.input) < 2 or node.input[0] in self._constants or node.input[1] not in self._constants:
            return False
        if _attr(node, "group", 1) != 1:
            return False
        kernel = _attr(node, "kernel_shape", None)
        if kernel is None:
            weight = self._constant_value(node.input[1])
            kernel = () if weight is None else weight.shape[2:]
        return len(kernel) > 0 and all(k == 1 for k in kernel)

    def _constant_value(self, name: str) -> np.ndarray | None:
        """The value of a tensor that does not depend on the input: an initializer, a Constant, or computed from
        them (e.g. a Transpose of a weight, as the dynamo exporter writes Linear layers without bias)."""
        cache = self.__dict__.setdefault("_constant_cache", {})
        if name in cache:
            return cache[name]
        from onnx import numpy_helper

        value = None
        init = next((t for t in self.model.graph.initializer if t.name == name), None)
        if init is not None:
            value = numpy_helper.to_array(init)
        elif name in self._constants:
            nodes = self._producers_of(self._upstream(name))
            used = {i for n in nodes for i in n.input}
            graph = helper.make_graph(nodes, "constant", [], [onnx.ValueInfoProto(name=name)],
                                      [t for t in self.model.graph.initializer if t.name in used])
            try:
                from onnx.reference import ReferenceEvaluator

                model = helper.make_model(graph, opset_imports=self.model.opset_import,
                                          ir_version=self.model.ir_version)
                value = np.asarray(ReferenceEvaluator(model).run(None, {})[0])
            except Exception:
                value = None
        cache[name] = value
        return value

    def _upstream(self, start: str, stop: str | None = None) -> set[str]:
        """The tensors `start` depends on, itself included, without walking through (or including) `stop`."""
        seen, stack = set(), [start]
        while stack:
            name = stack.pop()
            if name in seen or name == stop:
                continue
            seen.add(name)
            node = self._producer.get(name)
            if node is not None:
                stack.extend(i for i in node.input if i)
        return seen

    def _producers_of(self, tensors: set[str]) -> list[onnx.NodeProto]:
        """The nodes that produce any of `tensors`, in graph order."""
        return [n for n in self.model.graph.node if any(o in tensors for o in n.output)]

    def _head_is_closed(self, cut: str) -> bool:
        """True when the output depends on the input only through `cut` (no skip connection around it). A walk
        of its own: it stops at the input and skips constants, which matters when every node is tried."""
        seen, stack = set(), [self.output_name]
        while stack:
            name = stack.pop()
            if name == cut or name in seen or name in self._constants:
                continue
            seen.add(name)
            if name == self.input_name:
                return False
            node = self._producer.get(name)
            if node is not None:
                stack.extend(i for i in node.input if i)
        return cut in self._reaching_output

    @functools.cached_property
    def _reaching_output(self) -> set[str]:
        """Every tensor the output depends on."""
        return self._upstream(self.output_name)

    def is_default(self, tensor: str) -> bool:
        try:
            return tensor == self.default_layer_name()
        except GenauditError:
            return False

    def layers(self) -> list[Layer]:
        """Candidate layers in execution order, the default one marked (and always listed)."""
        try:
            default = self.default_layer_name()
        except GenauditError:
            default = None
        found = []
        for node in self.model.graph.node:
            for out in node.output:
                if out != default and not self._is_candidate(node, out):
                    continue
                shape = self._shapes.get(out)
                found.append(Layer(out, node.op_type, tuple(shape[1:]) if shape else (), out == default))
        return found

    def _is_candidate(self, node: onnx.NodeProto, out: str) -> bool:
        if node.op_type in NOT_A_LAYER or not out or out == self.output_name or out in self._constants:
            return False
        elem_type, shape = self._inferred.get(out, (0, None))
        if elem_type and elem_type not in FLOAT_TYPES:
            return False
        if shape is not None and len(shape) < 2:
            return False
        if node.op_type in ONLY_IF_FLOAT and (not elem_type or shape is None):
            return False
        return self._head_is_closed(out)

    def resolve_layer(self, name: str | None) -> str:
        """The tensor to cut at: the default feature layer, or a tensor/node name that is a clean cut."""
        if name is None:
            return self.default_layer_name()
        node = next((n for n in self.model.graph.node if n.name == name), None)
        tensor = node.output[0] if node is not None and name not in self._producer else name
        if tensor in self._producer and tensor != self.output_name and self._head_is_closed(tensor):
            return tensor
        raise GenauditError(
            f"Layer '{name}' is not a place where this model can be cut (unknown name, or a skip connection "
            "bypasses it). Run `genaudit layers MODEL` to list the candidate layers."
        )

    def op_of(self, tensor: str) -> str:
        return self._producer[tensor].op_type if tensor in self._producer else "input"

    # ---- cutting ----------------------------------------------------------------------------------------------
    def trunk(self, layer: str, extra: list[str] = ()) -> bytes:
        """The whole model with outputs [layer, model output, *extra], serialized: one pass gives features,
        outputs and any other layers. (The graph's outputs are swapped for the serialization only.)"""
        graph = self.model.graph
        saved = list(graph.output)
        del graph.output[:]
        graph.output.extend([helper.make_tensor_value_info(layer, TensorProto.FLOAT, None), saved[self.output_index]]
                            + [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in extra])
        try:
            return self.model.SerializeToString()
        finally:
            del graph.output[:]
            graph.output.extend(saved)

    def affine(self, layer: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(W, b) such that argmax(output) = argmax(flatten(layer) @ W + b), when the head is one Gemm or MatMul
        with constant weights, then only constant biases and scales (Add/Sub/Mul/Div by a constant scalar or
        per-class vector, folded into W and b exactly) and ops that keep each row's argmax; else None."""
        nodes = [n for n in self._head_nodes(layer) if not all(o in self._constants for o in n.output if o)]
        current, w, b, argmax_only = layer, None, None, False
        for node in nodes:
            op = node.op_type
            data = [i for i in node.input if i and i not in self._constants]
            if data != [current]:
                return None  # not a single chain from the layer to the output
            if w is None:  # before the classifier: only aliases of the layer
                if op in ("Gemm", "MatMul"):
                    if node.input[0] != current or (op == "Gemm" and _attr(node, "transA", 0)):
                        return None
                    w = self._constant_value(node.input[1])
                    if w is None or w.ndim != 2:
                        return None
                    w = w.astype(np.float64)
                    if op == "Gemm":
                        w = (w.T if _attr(node, "transB", 0) else w) * _attr(node, "alpha", 1.0)
                    b = np.zeros(w.shape[1])
                    if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                        b = _per_class(self._constant_value(node.input[2]), w.shape[1])
                        if b is None:
                            return None
                        b = b * _attr(node, "beta", 1.0)
                    # a MatMul over the last axis of a feature map is not flatten(layer) @ W (checked when shapes
                    # were inferred already: inference is too slow on big models to run for every cut)
                    size = self._shapes.get(layer) if "_inferred" in self.__dict__ else None
                    if size is not None and None not in size[1:] and math.prod(size[1:]) != w.shape[0]:
                        return None
                elif not (op in ("Identity", "Dropout") or (op == "Flatten" and _attr(node, "axis", 1) == 1)):
                    return None
            elif op in CONSTANT_OPERAND and not argmax_only:
                other = next(i for i in node.input if i and i != current)
                c = _per_class(self._constant_value(other), w.shape[1])
                if c is None:
                    return None
                first = node.input[0] == current
                if op == "Add":
                    b = b + c
                elif op == "Sub":
                    w, b = (w, b - c) if first else (-w, c - b)
                elif op == "Mul":
                    w, b = w * c, b * c
                elif first:  # Div by a constant
                    w, b = w / c, b / c
                else:
                    return None
            elif op in ARGMAX_SAFE and _attr(node, "axis", 1) in (1, -1):
                argmax_only = argmax_only or op in OUTPUT_KINDS
            else:
                return None
            current = node.output[0]
        if w is None or current != self.output_name:
            return None
        return w, b

    def _head_nodes(self, layer: str) -> list[onnx.NodeProto]:
        """The nodes between the layer's tensor and the output, in graph order."""
        return self._producers_of(self._upstream(self.output_name, layer))

    def head(self, layer: str) -> bytes:
        """The part of the graph from the layer's tensor to the output."""
        graph = self.model.graph
        nodes = self._head_nodes(layer)
        used = {i for n in nodes for i in n.input}
        inits = [t for t in graph.initializer if t.name in used]
        new_graph = helper.make_graph(
            nodes, "genaudit_head",
            [helper.make_tensor_value_info(layer, TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(self.output_name, graph.output[self.output_index].type.tensor_type.elem_type,
                                           None)],
            inits,
        )
        model = helper.make_model(new_graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        return model.SerializeToString()


def _choose_output(names: list[str], requested: str | None, classifies: Callable[[str], bool]) -> int:
    """Index of the output that holds the class scores: `requested` (a name or an index), else the only output
    whose name says 'logit', else the first that a classification layer produces (`classifies`), else the
    first."""
    if requested is None:
        logits = [i for i, name in enumerate(names) if "logit" in name.lower()]
        if len(logits) == 1:
            return logits[0]
        return next((i for i, name in enumerate(names) if len(names) > 1 and classifies(name)), 0)
    if requested in names:
        return names.index(requested)
    if requested.lstrip("-").isdigit() and -len(names) <= int(requested) < len(names):
        return int(requested) % len(names)
    listing = ", ".join(f"{i}: '{name}'" for i, name in enumerate(names))
    raise GenauditError(
        f"--output {requested} is not one of the model's outputs ({listing}). Pass the name or the index of the "
        "output that holds the class scores."
    )


def _constant_tensors(graph: onnx.GraphProto, initializers: set[str]) -> set[str]:
    """Tensors that do not depend on the graph input: initializers, Constants, and what is computed from them
    alone (nodes with subgraphs, which may read outer tensors, and random ops excepted)."""
    constants = set(initializers)
    for node in graph.node:
        if node.op_type in RANDOM_OPS or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                             for a in node.attribute):
            continue
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constants for i in inputs)):
            constants.update(o for o in node.output if o)
    return constants


def _per_class(value: np.ndarray | None, classes: int) -> np.ndarray | None:
    """A constant that broadcasts against (batch, classes) scores as one value per class, else None."""
    if value is None:
        return None
    value = np.asarray(value, np.float64)
    if value.size not in (1, classes) or (value.ndim == 2 and value.shape[0] != 1) or value.ndim > 2:
        return None
    return np.broadcast_to(value.reshape(-1), (classes,)).copy()


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def same_layout(model_shape: tuple, data_shape: tuple) -> bool:
    """Whether data of per-sample shape `data_shape` (or its flattening) can be given the model's declared
    per-sample shape by a reshape that keeps its meaning: the same non-singleton dims in the same order
    (1x28x28 -> 28x28x1 or 28x28), or a vector (1x28x28 -> 784x1). Channels-last RGB (3x32x32 -> 32x32x3) is
    not: that needs a transpose."""
    if not model_shape or None in model_shape or math.prod(model_shape) != math.prod(data_shape):
        return False
    model_dims = [d for d in model_shape if d != 1]
    return len(model_dims) <= 1 or model_dims == [d for d in data_shape if d != 1]


class Runner:
    """Runs an ONNX model with onnxruntime on batches, falling back to one sample at a time for graphs that
    hard-code batch size 1. Flat samples (or samples differing only by singleton dims, see `same_layout`) are
    given the model's declared per-sample shape."""

    def __init__(self, model: bytes, what: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if os.environ.get("GENAUDIT_THREADS"):  # set by `compare --jobs N` so processes share the cores
            options.intra_op_num_threads = int(os.environ["GENAUDIT_THREADS"])
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # an op onnxruntime does not implement, an invalid graph ...
            raise GenauditError(
                f"onnxruntime cannot run the model's {what}: {str(exc).splitlines()[0][:300]}. "
                "Re-export the model with a standard opset (e.g. opset 17) using only standard ONNX ops."
            ) from None
        self.what = what
        declared = self.session.get_inputs()[0]
        self.input_name = declared.name
        dims = list(declared.shape or [])[1:]
        self.sample_shape = tuple(dims) if dims and all(isinstance(d, int) and d > 0 for d in dims) else None
        self.one_at_a_time = False

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        shape = self.sample_shape
        if shape is not None and x.shape[1:] != shape and (x.ndim == 2 or same_layout(shape, x.shape[1:])) \
                and x[:1].size == math.prod(shape):
            x = x.reshape(len(x), *shape)
        if not self.one_at_a_time and len(x) > 1:
            try:
                return self.session.run(None, {self.input_name: x})
            except Exception:
                self.one_at_a_time = True  # e.g. a Reshape to a constant batch of 1 inside the graph
        try:
            parts = [self.session.run(None, {self.input_name: x[i : i + 1]}) for i in range(len(x))]
        except Exception as exc:
            raise GenauditError(
                f"onnxruntime could not run the model's {self.what} on inputs of shape {list(x.shape[1:])} per "
                f"sample: {str(exc).splitlines()[0][:300]}. The data probably does not match what the model "
                "takes: check --layout (nchw | nhwc | flat), --channels and --resize."
            ) from None
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


@dataclass
class SplitModel:
    """A classifier cut at one layer. `trunk(x)` gives (features, outputs); `head(features)` gives outputs."""

    layer: str          # tensor name of the cut
    op: str             # op producing it
    default: bool       # whether it is the automatically found feature layer
    output_kind: str
    trunk_runner: Runner
    head_runner: Runner

    def trunk(self, x: np.ndarray) -> list[np.ndarray]:
        """[features, model outputs, *extra layers] for a batch of inputs."""
        return self.trunk_runner(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The whole model's outputs."""
        return self.trunk_runner(x)[1]

    affine: AffineHead | None = None    # the head in closed form, when it is one affine map

    @property
    def head(self) -> Head:
        """features -> outputs: the closed-form affine map when there is one, else the ONNX head graph."""
        return self.affine if self.affine is not None else (lambda features: self.head_runner(features)[0])


def split(splitter: OnnxSplitter, layer_name: str | None, extra: list[str] = ()) -> SplitModel:
    """Cut the model at `layer_name` (default: the classifier's input) and open both parts in onnxruntime;
    the trunk also returns the `extra` layers' tensors."""
    name = splitter.resolve_layer(layer_name)
    return SplitModel(
        layer=name,
        op=splitter.op_of(name),
        default=splitter.is_default(name),
        output_kind=splitter.output_kind,
        trunk_runner=Runner(splitter.trunk(name, extra), "trunk"),
        head_runner=Runner(splitter.head(name), "head"),
        affine=None if (wb := splitter.affine(name)) is None else AffineHead(*wb),
    )
