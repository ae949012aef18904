"""Graph analysis of an ONNX classifier: its input, its outputs and which one holds the class scores (and
their kind), the inferred shapes of its tensors, the layers where it can be cut, and its default feature layer.

Every model format ends up here (TorchScript and torch.export programs are converted to ONNX first), so the
audit gives the same numbers whatever format a model was saved in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from genaudit.errors import GenauditError

if TYPE_CHECKING:  # bound for real by _bind_onnx, on the first OnnxGraph
    import onnx
    from onnx import helper

    from genaudit.models.ops import (
        ACTIVATIONS,
        AFTER_CLASSIFIER,
        CONSTANT_OPERAND,
        FLOAT_TYPES,
        MONOTONE,
        NOT_A_LAYER,
        ONLY_IF_FLOAT,
        OUTPUT_KINDS,
        PASS_THROUGH,
        RANDOM_OPS,
        attr,
    )

_OPS = ("ACTIVATIONS", "AFTER_CLASSIFIER", "CONSTANT_OPERAND", "FLOAT_TYPES", "MONOTONE", "NOT_A_LAYER",
        "ONLY_IF_FLOAT", "OUTPUT_KINDS", "PASS_THROUGH", "RANDOM_OPS", "attr")


def _bind_onnx() -> None:
    """Import onnx (about 0.1-0.4 s) and the op vocabulary into this module on first use, not on import: an audit
    whose graph analysis and cut come from the cache (cache.CachedGraph) never imports onnx."""
    if "onnx" in globals():
        return
    import onnx as onnx_module
    from onnx import helper as helper_module

    from genaudit.models import ops

    globals().update({name: getattr(ops, name) for name in _OPS}, helper=helper_module, onnx=onnx_module)


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


class OnnxGraph:
    """Knows an ONNX classifier's graph: its candidate layers, its default feature layer, where it can be cut,
    (affine.py reads a cut's head in closed form). runtime.py builds and runs the two parts of a cut; cache.py cuts
    through the model cache."""

    def __init__(self, model: onnx.ModelProto, output: str | None = None, classes: int | None = None) -> None:
        """Analyse `model` (made batch-free in place), its class scores taken from `output` (a name or an
        index; None: chosen, see _choose_output, among the outputs with at least `classes` values per sample
        when that is given, e.g. the data's largest label + 1, and some output has that many)."""
        _bind_onnx()
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
        self.constants = _constant_tensors(graph, self._init_names)  # tensors that do not depend on the input
        self._constant_values: dict[str, np.ndarray | None] = {}
        self.output_names = [o.name for o in graph.output]
        eligible = self.output_names
        if output is None and classes is not None and len(self.output_names) > 1:
            sizes = self.output_sizes()
            enough = [name for name, size in zip(self.output_names, sizes) if size is None or size >= classes]
            eligible = enough or eligible  # none has enough classes: chosen as usual, the labels are refused later
        index = _choose_output(eligible, output, lambda name: self._classifier_input(name) is not None,
                               self.output_names)
        self.output_index = self.output_names.index(eligible[index]) if output is None else index
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

    def inferred_shape(self, tensor: str) -> tuple | None:
        """The tensor's inferred shape (batch dim included), None when unknown; infers shapes on first use."""
        return self._inferred.get(tensor, (0, None))[1]

    @property
    def shapes_inferred(self) -> bool:
        """Whether shapes were inferred already (inference is too slow on big models to run for every cut)."""
        return "_inferred" in self.__dict__

    def output_sizes(self) -> list[int | None]:
        """Values per sample of each output (its number of classes, for class scores), from the declared shapes,
        else inferred ones; None when unknown."""
        sizes = []
        for out in self.model.graph.output:
            t = out.type.tensor_type
            dims = ([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                    if t.HasField("shape") else [])
            if len(dims) < 2 or None in dims[1:]:
                dims = list(self.inferred_shape(out.name) or [])
            sizes.append(int(np.prod(dims[1:])) if len(dims) >= 2 and None not in dims[1:] else None)
        return sizes

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
        name, after = self.output_name, []  # Log/Exp met on the way back from the output
        while name in self._producer:
            node = self._producer[name]
            if node.op_type in OUTPUT_KINDS:
                kind = OUTPUT_KINDS[node.op_type]
                for op in reversed(after):  # Softmax -> Log: log-probabilities; LogSoftmax -> Exp: probabilities
                    kind = {("Log", "probabilities"): "log-probabilities",
                            ("Exp", "log-probabilities"): "probabilities"}.get((op, kind), kind)
                return kind
            if node.op_type == "LpNormalization" or (node.op_type == "Div" and self._is_norm(node.input[1])):
                return "embedding"
            if node.op_type in MONOTONE:
                after.append(node.op_type)
            elif node.op_type in CONSTANT_OPERAND and self._scalar_operand(node) is not None:
                pass  # a constant shift or positive rescaling (x * 100, x / T) keeps what the scores are
            elif node.op_type not in PASS_THROUGH:
                return "logits"
            name = next((i for i in node.input if i and i not in self.constants), "")
        return "logits"

    def _scalar_operand(self, node: onnx.NodeProto) -> float | None:
        """The constant of an Add/Sub/Mul/Div of the scores by one constant value that keeps the order of the
        scores in each row (x + c, x - c, x * c or x / c with c > 0), else None."""
        data = [i for i in node.input if i and i not in self.constants]
        others = [i for i in node.input if i and i in self.constants]
        if len(data) != 1 or len(others) != 1:
            return None
        value = self.constant_value(others[0])
        if value is None or np.size(value) != 1:
            return None
        c = float(np.asarray(value).reshape(-1)[0])
        first = node.input[0] == data[0]
        if node.op_type == "Add" or (node.op_type == "Sub" and first):
            return c
        if node.op_type in ("Mul", "Div") and c > 0 and (first or node.op_type == "Mul"):
            return c
        return None

    def _is_norm(self, name: str) -> bool:
        """Whether a tensor is a vector norm (ReduceL2, or Sqrt of a sum of squares), possibly clamped or
        broadcast: what F.normalize and L2-normalized embeddings divide by."""
        while name in self._producer and name not in self.constants:
            node = self._producer[name]
            if node.op_type in ("ReduceL2", "Sqrt"):
                return True
            if node.op_type not in ("Clip", "Max", "Add", "Expand", "Unsqueeze", "Reshape", "Identity"):
                return False
            name = node.input[0]
        return False

    def _data_input(self, node: onnx.NodeProto) -> str | None:
        """The input of a Gemm/MatMul that carries data (not weights)."""
        data = [i for i in node.input[:2] if i and i not in self.constants]
        return data[0] if len(data) == 1 else None

    @functools.cached_property
    def _default_layer(self) -> str | None:
        """The default feature layer (see default_layer_name), None when no classifier is found; found once."""
        return self._classifier_input(self.output_name)

    def default_layer_name(self) -> str:
        """The representation that feeds the final classification layer: the data input of the last Gemm/MatMul
        (or of a 1x1 Conv whose per-position scores are pooled, as in SqueezeNet) on the way to the output."""
        if self._default_layer is None:
            raise GenauditError(
                "Could not find the final classification layer (a Gemm or MatMul, or a 1x1 Conv before a global "
                "pool, feeding the output through Softmax/Flatten/Reshape/Identity/bias/activation only). Pass the "
                "feature layer explicitly with --layer NAME; `genaudit layers MODEL` lists the candidates."
            )
        return self._default_layer

    def _classifier_input(self, output: str) -> str | None:
        """The data input of the classifier that produces `output` (see default_layer_name), or None."""
        name = output
        seen = set()
        while name in self._producer and name not in seen:
            seen.add(name)
            node = self._producer[name]
            op = node.op_type
            if op in PASS_THROUGH or op in AFTER_CLASSIFIER or op in MONOTONE:
                name = node.input[0]
            elif op in CONSTANT_OPERAND:
                data = [i for i in node.input if i and i not in self.constants]
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
        if len(node.input) < 2 or node.input[0] in self.constants or node.input[1] not in self.constants:
            return False
        if attr(node, "group", 1) != 1:
            return False
        kernel = attr(node, "kernel_shape", None)
        if kernel is None:
            weight = self.constant_value(node.input[1])
            kernel = () if weight is None else weight.shape[2:]
        return len(kernel) > 0 and all(k == 1 for k in kernel)

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a tensor that does not depend on the input: an initializer, a Constant, or computed from
        them (e.g. a Transpose of a weight, as the dynamo exporter writes Linear layers without bias)."""
        if name in self._constant_values:
            return self._constant_values[name]
        from onnx import numpy_helper

        value = None
        init = next((t for t in self.model.graph.initializer if t.name == name), None)
        if init is not None:
            value = numpy_helper.to_array(init)
        elif name in self.constants:
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
        self._constant_values[name] = value
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

    def head_nodes(self, layer: str) -> list[onnx.NodeProto]:
        """The nodes between the layer's tensor and the output, in graph order: the head of a cut there."""
        return self._producers_of(self._upstream(self.output_name, layer))

    def _head_is_closed(self, cut: str) -> bool:
        """True when the output depends on the input only through `cut` (no skip connection around it). A walk
        of its own: it stops at the input and skips constants, which matters when every node is tried."""
        seen, stack = set(), [self.output_name]
        while stack:
            name = stack.pop()
            if name == cut or name in seen or name in self.constants:
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
        """Whether `tensor` is the default feature layer (False when the model has none)."""
        return tensor == self._default_layer

    def layers(self) -> list[Layer]:
        """Candidate layers in execution order, the default one marked (and always listed)."""
        default = self._default_layer
        found = []
        for node in self.model.graph.node:
            for out in node.output:
                if out != default and not self._is_candidate(node, out):
                    continue
                shape = self.inferred_shape(out)
                found.append(Layer(out, node.op_type, tuple(shape[1:]) if shape else (), out == default))
        return found

    def early_layer(self) -> str | None:
        """The first non-linear representation: the first activation's output among the layers, else the first
        layer (None when there is none). It may be the feature layer itself (a one-hidden-layer MLP)."""
        layers = self.layers()
        first = next((lay for lay in layers if lay.op in ACTIVATIONS), layers[0] if layers else None)
        return None if first is None else first.name

    def _is_candidate(self, node: onnx.NodeProto, out: str) -> bool:
        """Whether `out` is offered as a layer: a float tensor of rank >= 2, not plumbing, that is a clean cut."""
        if node.op_type in NOT_A_LAYER or not out or out == self.output_name or out in self.constants:
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
        """The tensor to cut at: the default feature layer, or a tensor/node name that is a clean cut. Resolve
        once and pass the result on: `cut_at` takes it as it is."""
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
        """The op that produces `tensor` ('input' for the graph input)."""
        return self._producer[tensor].op_type if tensor in self._producer else "input"


def _choose_output(names: list[str], requested: str | None, classifies: Callable[[str], bool],
                   every: list[str] | None = None) -> int:
    """Index of the output that holds the class scores: `requested` (a name or an index, among `every` output:
    default `names`), else, among `names`, the only output whose name says 'logit', else the first that a
    classification layer produces (`classifies`), else the first."""
    if requested is None:
        logits = [i for i, name in enumerate(names) if "logit" in name.lower()]
        if len(logits) == 1:
            return logits[0]
        several = len(every or names) > 1
        return next((i for i, name in enumerate(names) if several and classifies(name)), 0)
    names = every or names
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

