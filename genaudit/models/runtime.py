"""Running a cut model with onnxruntime: the trunk (input -> features, outputs) and the head (features -> outputs)
built as ONNX models of their own, opened in onnxruntime (the fastest CPU runtime for every format genaudit
reads), and run on batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from genaudit.errors import GenauditError, first_line
from genaudit.heads import AffineHead, Head

if TYPE_CHECKING:
    from genaudit.models.graph import OnnxGraph


def same_layout(model_shape: tuple, data_shape: tuple) -> bool:
    """Whether data of per-sample shape `data_shape` (or its flattening) can be given the model's declared
    per-sample shape by a reshape that keeps its meaning: the same non-singleton dims in the same order
    (1x28x28 -> 28x28x1 or 28x28), or a vector (1x28x28 -> 784x1). Channels-last RGB (3x32x32 -> 32x32x3) is
    not: that needs a transpose."""
    if not model_shape or None in model_shape or math.prod(model_shape) != math.prod(data_shape):
        return False
    model_dims = [d for d in model_shape if d != 1]
    return len(model_dims) <= 1 or model_dims == [d for d in data_shape if d != 1]


DEVICES = ("auto", "cpu", "cuda")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def providers_for(device: str, available: list[str] | None = None) -> list[str]:
    """onnxruntime execution providers for `device`: "cuda" runs on the GPU (CPU for any op CUDA lacks) and is
    refused when this onnxruntime build has no CUDA provider; "auto" takes CUDA when there is one, else the CPU;
    "cpu" the CPU. `available`: the build's providers (default: onnxruntime's own list)."""
    if device not in DEVICES:
        raise GenauditError(f"--device must be one of {', '.join(DEVICES)} (got '{device}').")
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if CUDA in available and device in ("auto", "cuda"):
        return [CUDA, CPU]
    if device == "cuda":
        raise GenauditError(
            f"--device cuda: this onnxruntime has no CUDA execution provider (it has: {', '.join(available)}). "
            "On a machine with an NVIDIA GPU and CUDA, replace the CPU build: `pip uninstall -y onnxruntime && pip "
            "install 'genaudit[gpu]'` (onnxruntime-gpu); or use --device cpu."
        )
    return [CPU]


class Runner:
    """Runs an ONNX model with onnxruntime on batches, falling back to one sample at a time for graphs that
    hard-code batch size 1. Flat samples (or samples differing only by singleton dims, see `same_layout`) are
    given the model's declared per-sample shape."""

    def __init__(self, model: bytes | Path, what: str, threads: int | None = None, providers: list[str] = (CPU,),
                 save: Path | None = None) -> None:
        """Open `model` (`what` names it in errors) on `providers` (see providers_for) with `threads` intra-op
        threads (None: onnxruntime's default, one per core): serialized bytes, optimized by onnxruntime as it
        opens them (and written to `save` so optimized, when given); or the path of a model onnxruntime optimized
        before on this machine (`genaudit.models.cache`), opened as it is."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        # Between runs the audit's own threads work (the batches' vectors, the diagnostics' lanes); onnxruntime's
        # threads spinning while they wait for the next run would take their cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if isinstance(model, Path):
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            model = str(model)
        if save is not None:
            options.optimized_model_filepath = str(save)
        try:
            self.session = ort.InferenceSession(model, options, providers=list(providers))
        except Exception as exc:  # an op onnxruntime does not implement, an invalid graph ...
            raise GenauditError(
                f"onnxruntime cannot run the model's {what}: {first_line(exc)}. "
                "Re-export the model with a standard opset (e.g. opset 17) using only standard ONNX ops."
            ) from None
        self.what = what
        declared = self.session.get_inputs()[0]
        self.input_name = declared.name
        dims = list(declared.shape or [])[1:]
        self.sample_shape = tuple(dims) if dims and all(isinstance(d, int) and d > 0 for d in dims) else None
        self.one_at_a_time = False

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """The model's outputs for a batch of inputs."""
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
                f"sample: {first_line(exc)}. The data probably does not match what the model "
                "takes: check --layout (nchw | nhwc | flat), --channels and --resize."
            ) from None
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


@dataclass
class CutModel:
    """A classifier cut at one layer. `trunk(x)` gives (features, outputs); `head(features)` gives outputs."""

    layer: str          # tensor name of the cut
    op: str             # op producing it
    default: bool       # whether it is the automatically found feature layer
    output_kind: str
    trunk_runner: Runner
    head_runner: Runner
    affine: AffineHead | None = None    # the head in closed form, when it is one affine map

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider the trunk runs on (e.g. CPUExecutionProvider)."""
        return self.trunk_runner.session.get_providers()[0]

    def trunk(self, x: np.ndarray) -> list[np.ndarray]:
        """[features, model outputs, *extra layers] for a batch of inputs."""
        return self.trunk_runner(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The whole model's outputs."""
        return self.trunk_runner(x)[1]

    @property
    def head(self) -> Head:
        """features -> outputs: the closed-form affine map when there is one, else the ONNX head graph."""
        return self.affine if self.affine is not None else (lambda features: self.head_runner(features)[0])


def trunk_model(graph: OnnxGraph, layer: str, extra: Sequence[str] = ()) -> bytes:
    """The whole model with outputs [layer, model output, *extra], serialized: one pass gives features, outputs
    and any other layers. (The graph's outputs are swapped for the serialization only.)"""
    from onnx import TensorProto, helper

    outputs = graph.model.graph.output
    saved = list(outputs)
    del outputs[:]
    outputs.extend([helper.make_tensor_value_info(layer, TensorProto.FLOAT, None), saved[graph.output_index]]
                   + [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in extra])
    try:
        return graph.model.SerializeToString()
    finally:
        del outputs[:]
        outputs.extend(saved)


def head_model(graph: OnnxGraph, layer: str, products: bool = True) -> bytes:
    """The part of the graph from the layer's tensor to the output, serialized, its convolutions on maps of a few
    positions run as matrix products (`genaudit.models.small_maps`: the head runs on every variant of the
    features); with `products` False, every node as the model holds it."""
    from onnx import TensorProto, helper

    from genaudit.models.small_maps import as_products

    nodes, initializers = as_products(graph, graph.head_nodes(layer)) if products else (graph.head_nodes(layer), [])
    needed, kept = {graph.output_name}, []
    for node in reversed(nodes):  # without the nodes only the replaced convolutions read (their weights' copies)
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    output_type = graph.model.graph.output[graph.output_index].type.tensor_type.elem_type
    head = helper.make_graph(
        kept[::-1], "genaudit_head",
        [helper.make_tensor_value_info(layer, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(graph.output_name, output_type, None)],
        [t for t in graph.model.graph.initializer if t.name in needed] + initializers,
    )
    model = helper.make_model(head, opset_imports=graph.model.opset_import, ir_version=graph.model.ir_version)
    return model.SerializeToString()
