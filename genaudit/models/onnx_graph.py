"""Split an ONNX classifier around one layer: a trunk (input -> features, logits) and a head (features -> logits).

Every model format ends up here (TorchScript and torch.export programs are converted to ONNX first), so the
audit gives the same numbers whatever format a model was saved in, and runs on onnxruntime, the fastest
CPU runtime available for all of them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import numpy as np
import onnx
from onnx import TensorProto, helper

from genaudit.errors import GenauditError
from genaudit.heads import AffineHead, Head

# Ops that pass the logits through on the way to the output: walked back over when finding the classifier.
PASS_THROUGH = {
    "Softmax", "LogSoftmax", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout",
}
# Ops whose output is never offered as a layer: shape plumbing and constants.
NOT_A_LAYER = {
    "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Concat", "Slice", "ConstantOfShape",
    "Range", "Equal", "Where", "Expand", "Size", "Identity", "Dropout", "Softmax", "LogSoftmax",
}
# Ops after the classifier's affine map that leave each row's argmax unchanged (softmax along the class axis).
ARGMAX_SAFE = {"Softmax", "LogSoftmax", "Identity", "Flatten", "Dropout", "Cast"}
# Outputs of these are probabilities / log-probabilities rather than logits.
OUTPUT_KINDS = {"Softmax": "probabilities", "LogSoftmax": "log-probabilities"}


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

    def __init__(self, model: onnx.ModelProto):
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
        self.output_name = graph.output[0].name
        self._producer = {o: n for n in graph.node for o in n.output}
        self._constants = self._init_names | {o for n in graph.node if n.op_type == "Constant" for o in n.output}

    @functools.cached_property
    def _shapes(self) -> dict[str, tuple]:
        """Inferred shapes of the graph's tensors (batch dim included); only computed to list layers."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:  # shape inference is a nicety; cuts work without it
            inferred = self.model
        shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return shapes

    # ---- graph queries -------------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        """Declared per-sample input shape (batch dropped); None for unknown dims."""
        dims = self.inputs[0].type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)[1:]

    @property
    def output_kind(self) -> str:
        """'logits', 'probabilities' or 'log-probabilities', from the op that produces the output."""
        name = self.output_name
        while name in self._producer:
            node = self._producer[name]
            if node.op_type in OUTPUT_KINDS:
                return OUTPUT_KINDS[node.op_type]
            if node.op_type not in PASS_THROUGH:
                return "logits"
            name = node.input[0]
        return "logits"

    def _data_input(self, node: onnx.NodeProto) -> str | None:
        """The input of a Gemm/MatMul that carries data (not weights)."""
        data = [i for i in node.input[:2] if i and i not in self._constants]
        return data[0] if len(data) == 1 else None

    def default_layer_name(self) -> str:
        """The representation that feeds the final classification layer (input of the last Gemm/MatMul)."""
        name = self.output_name
        while name in self._producer:
            node = self._producer[name]
            if node.op_type in PASS_THROUGH:
                name = node.input[0]
            elif node.op_type == "Add":
                name = next((i for i in node.input if i not in self._constants), None)
                if name is None:
                    break
            elif node.op_type in ("Gemm", "MatMul"):
                feature = self._data_input(node)
                if feature is None:
                    break
                return feature
            else:
                break
        raise GenauditError(
            "Could not find the final classification layer (a Gemm or MatMul feeding the output through "
            "Softmax/Flatten/Reshape/Identity only). Pass the feature layer explicitly with --layer NAME; "
            "`genaudit layers MODEL` lists the candidates."
        )

    def _head_is_closed(self, cut: str) -> bool:
        """True when the output depends on the input only through `cut` (no skip connection around it)."""
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
        seen, stack = set(), [self.output_name]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self._producer.get(name)
            if node is not None:
                stack.extend(i for i in node.input if i)
        return seen

    def is_default(self, tensor: str) -> bool:
        try:
            return tensor == self.default_layer_name()
        except GenauditError:
            return False

    def layers(self) -> list[Layer]:
        """Candidate layers in execution order, the default one marked."""
        found = []
        for node in self.model.graph.node:
            if node.op_type in NOT_A_LAYER:
                continue
            for out in node.output:
                if out == self.output_name or out in self._constants or not self._head_is_closed(out):
                    continue
                shape = self._shapes.get(out)
                if shape is not None and len(shape) < 2:
                    continue
                found.append(Layer(out, node.op_type, tuple(shape[1:]) if shape else (), self.is_default(out)))
        return found

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
        graph.output.extend([helper.make_tensor_value_info(layer, TensorProto.FLOAT, None), saved[0]]
                            + [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in extra])
        try:
            return self.model.SerializeToString()
        finally:
            del graph.output[:]
            graph.output.extend(saved)

    def affine(self, layer: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(W, b) such that argmax(output) = argmax(flatten(layer) @ W + b), when the head is one Gemm or
        MatMul(+Add) with constant weights and otherwise only ops that keep each row's argmax; else None."""
        from onnx import numpy_helper

        nodes = self._head_nodes(layer)
        linear = [n for n in nodes if n.op_type in ("Gemm", "MatMul", "Add")]
        rest = [n for n in nodes if n not in linear]
        if any(n.op_type not in ARGMAX_SAFE or _attr(n, "axis", 1) not in (1, -1) for n in rest):
            return None
        values = {t.name: numpy_helper.to_array(t) for t in self.model.graph.initializer}
        values |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in self.model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
        flat = {layer} | {n.output[0] for n in rest if n.op_type == "Flatten" and n.input[0] == layer}
        ops = [n.op_type for n in linear]
        if ops == ["Gemm"]:
            gemm = linear[0]
            if gemm.input[0] not in flat or gemm.input[1] not in values or _attr(gemm, "transA", 0):
                return None
            w = values[gemm.input[1]]
            w = (w.T if _attr(gemm, "transB", 0) else w) * _attr(gemm, "alpha", 1.0)
            b = values[gemm.input[2]] * _attr(gemm, "beta", 1.0) if len(gemm.input) > 2 and gemm.input[2] else 0
        elif ops in (["MatMul"], ["MatMul", "Add"]):
            matmul = linear[0]
            if matmul.input[0] not in flat or matmul.input[1] not in values:
                return None
            w = values[matmul.input[1]]
            b = 0
            if len(linear) == 2:
                bias = [i for i in linear[1].input if i != matmul.output[0]]
                if len(bias) != 1 or bias[0] not in values:
                    return None
                b = values[bias[0]]
        else:
            return None
        if w.ndim != 2:
            return None
        return w.astype(np.float64), np.broadcast_to(np.asarray(b, np.float64), (w.shape[1],)).copy()

    def _head_nodes(self, layer: str) -> list[onnx.NodeProto]:
        """The nodes between the layer's tensor and the output, in graph order."""
        needed, stack = set(), [self.output_name]
        while stack:
            name = stack.pop()
            node = self._producer.get(name)
            if name == layer or node is None or id(node) in needed:
                continue
            needed.add(id(node))
            stack.extend(i for i in node.input if i)
        return [n for n in self.model.graph.node if id(n) in needed]

    def head(self, layer: str) -> bytes:
        """The part of the graph from the layer's tensor to the output."""
        graph = self.model.graph
        nodes = self._head_nodes(layer)
        used = {i for n in nodes for i in n.input}
        inits = [t for t in graph.initializer if t.name in used]
        new_graph = helper.make_graph(
            nodes, "genaudit_head",
            [helper.make_tensor_value_info(layer, TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(self.output_name, graph.output[0].type.tensor_type.elem_type, None)],
            inits,
        )
        model = helper.make_model(new_graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        return model.SerializeToString()


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class Runner:
    """Runs an ONNX model with onnxruntime on batches, falling back to one sample at a time for graphs that
    hard-code batch size 1."""

    def __init__(self, model: bytes, what: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # an op onnxruntime does not implement, an invalid graph ...
            raise GenauditError(
                f"onnxruntime cannot run the model's {what}: {str(exc).splitlines()[0][:300]}. "
                "Re-export the model with a standard opset (e.g. opset 17) using only standard ONNX ops."
            ) from None
        self.input_name = self.session.get_inputs()[0].name
        self.one_at_a_time = False

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.one_at_a_time and len(x) > 1:
            try:
                return self.session.run(None, {self.input_name: x})
            except Exception:
                self.one_at_a_time = True  # e.g. a Reshape to a constant batch of 1 inside the graph
        parts = [self.session.run(None, {self.input_name: x[i : i + 1]}) for i in range(len(x))]
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
