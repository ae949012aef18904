"""TorchScript and torch.export files: inspected without unpickling, then converted to ONNX (cached).

torch is imported only here, and only for these formats: auditing an ONNX file never pays for it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from genaudit.errors import GenauditError, first_line
from genaudit.files import prune_model_cache, used, write_atomic
from genaudit.models import safety

if TYPE_CHECKING:  # annotations only: torch is imported inside the functions that need it
    import torch

EXPORT_HINT = (
    "Export the model to TorchScript (`torch.jit.script(model).save('model.pt')`), to ONNX "
    "(`torch.onnx.export(model, example, 'model.onnx')`) or to torch.export "
    "(`torch.export.save(torch.export.export(model, (example,)), 'model.pt2')`) and audit that file."
)

TORCH_EXTRA = "pip install 'genaudit[torch]'"


def require(module: str, what: str, alternative: str = ""):
    """Import `module` (torch, torchvision...: optional, in the [torch] extra), or refuse `what` with one message
    naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise GenauditError(
            f"{what} needs PyTorch ({module.split('.')[0]}), which is not installed: genaudit's base install audits "
            f"ONNX files only. Install it with `{TORCH_EXTRA}`{alternative}."
        ) from None


def _torch(path: Path, kind: str):
    name = "TorchScript" if kind == "torchscript" else "torch.export"
    return require("torch", f"Reading {path} (a {name} file)",
                   ", or export the model to ONNX and audit the .onnx file")


def zip_kind(path: Path) -> str:
    """Classify a torch zip archive by its members alone: 'torchscript', 'export', 'state_dict' or 'pickle'. The
    archive's directory is checked for zip bombs first; a torch.save pickle is walked, never unpickled."""
    with safety.open_archive(path, path.stat().st_size, str(path)) as archive:
        names = archive.namelist()
        if any(n.endswith("/archive_format") or n.endswith("models/model.json") for n in names):
            return "export"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        data_pkl = next((n for n in names if n.endswith("data.pkl")), None)
        if data_pkl is None:
            raise GenauditError(f"{path} is a zip archive but not a PyTorch model file. {EXPORT_HINT}")
        payload = safety.read_member(archive, archive.getinfo(data_pkl), str(path))
    try:
        safety.check_pickle(payload, safety.STATE_DICT)
        return "state_dict"
    except safety.Unsafe:  # classes other than tensors and dicts: a pickled nn.Module (or worse)
        return "pickle"
    except Exception as exc:  # not a pickle stream: garbage, truncated
        raise GenauditError(
            f"{path} is a zip archive like those torch.save writes, but its {data_pkl} is damaged "
            f"({' '.join(str(exc).split())[:120] or type(exc).__name__}): the file is corrupt or truncated, or "
            f"was not written by PyTorch. Copy or save it again. {EXPORT_HINT}"
        ) from None


def refuse(kind: str, path: Path) -> GenauditError:
    if kind == "pickle":
        return GenauditError(
            f"{path} is a pickled nn.Module (saved with torch.save(model)). genaudit never unpickles such "
            f"files, because unpickling runs arbitrary code. {EXPORT_HINT}"
        )
    return GenauditError(
        f"{path} holds only weights (a state_dict), not the network that uses them, so it cannot be run. "
        f"Load the weights into your model class and export it. {EXPORT_HINT}"
    )


def _example(shape: tuple) -> torch.Tensor:
    import torch

    safety.check_tensor_bytes((2, *shape), 4, "The input to run the model on")  # the shape may come from the archive
    return torch.zeros((2, *shape), dtype=torch.float32)


_LOADED: dict = {}  # the last module loaded, so that shape lookup, probing and conversion load it only once


def _load_module(path: Path, kind: str):
    stat = path.stat()
    key = (str(path.resolve()), kind, stat.st_size, stat.st_mtime_ns)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _load_module_uncached(path, kind)
    return _LOADED[key]


def _forget_modules() -> None:
    _LOADED.clear()


class _Records(logging.Handler):
    """Keeps the log records torch emits, instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def cause(self) -> BaseException | None:
        """The last exception torch logged (e.g. why an archive could not be deserialized), if any."""
        return next((r.exc_info[1] for r in reversed(self.records) if r.exc_info and r.exc_info[1]), None)


@contextlib.contextmanager
def _quiet():
    """No Python warnings, and torch's log records kept instead of printed, while torch reads or converts a
    file: torch.export logs the traceback of a failed deserialization as a warning, which genaudit reports as
    one message instead. Yields the records (a _Records)."""
    capture = _Records()
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "torch" or name.startswith("torch.")]
    saved = [(logger, logger.handlers[:]) for logger in loggers if logger.handlers]
    for logger, _ in saved:
        logger.handlers[:] = [capture]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield capture
    finally:
        for logger, handlers in saved:
            logger.handlers[:] = handlers


@contextlib.contextmanager
def _weights_only():
    """Every torch.load torch makes meanwhile is weights-only (TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides even an
    explicit weights_only=False). torch.export.load needs it: in torch 2.14 it loads weights and constants
    marked use_pickle with weights_only=False (export/pt2_archive/_package.py `_load_state_dict`,
    `_load_constants`), and the example inputs, and every part of a legacy-format archive, with
    weights_only=True but retries with weights_only=False when that fails (_export/serde/serialize.py
    `deserialize_torch_artifact`). safety.check_archive has refused any pickle that needs more, and the
    constants torch unpickles otherwise (`opaque_obj_*`: pickle.loads; `custom_obj_*`: TorchScript's unpickler);
    this is the second line. torch.jit.load unpickles with TorchScript's own restricted C++ unpickler."""
    saved = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved


def _load_module_uncached(path: Path, kind: str):
    safety.check_archive(path, kind)  # identify() checked it too: this is the moment torch reads it
    torch = _torch(path, kind)

    with _quiet() as logged, _weights_only():
        try:
            if kind == "torchscript":
                return torch.jit.load(str(path), map_location="cpu").eval()
            return torch.export.load(str(path))
        except Exception as exc:
            name = "TorchScript" if kind == "torchscript" else "torch.export"
            root = logged.cause() or exc  # torch logs the actual problem, then raises "check the warnings above"
            for _ in range(5):
                root = root.__cause__ or root.__context__ or root
            detail = " ".join(str(root).split()).split(". ")[0][:300] or type(root).__name__
            raise GenauditError(
                f"{path} could not be loaded as a {name} file ({detail}). If it was truncated or damaged in "
                f"transfer, copy it again; otherwise re-export it with this torch version. {EXPORT_HINT}"
            ) from None


def probe_input_shape(path: Path, kind: str, candidates: list[tuple]) -> tuple:
    """The first candidate per-sample input shape the model accepts; a clear error if it takes none."""
    run = _runnable(_load_module(path, kind), kind)
    import torch

    errors = []
    for shape in candidates:
        example = _example(shape)
        try:
            with torch.no_grad(), _quiet():
                run(example)
            return shape
        except Exception as exc:
            errors.append(f"{'x'.join(map(str, shape))}: {str(exc).strip().splitlines()[-1][:160]}")
    # torch names the channels its first conv wants when it gets others, e.g. "expected input[2, 1, 12, 12] to
    # have 3 channels, but got 1": that is the conversion to ask for
    wanted = re.search(r"to have (\d+) channels, but got (\d+)", errors[0]) if errors else None
    fix = (f"Convert the images with --channels {wanted[1]} (the model's first layer wants {wanted[1]} channels, "
           f"the data has {wanted[2]})." if wanted and wanted[1] in ("1", "3") else
           "Check that the data matches what the model was trained on; --channels and --resize convert images, "
           "--input-shape declares the shape.")
    raise GenauditError(f"The model does not accept the data's shape ({'; '.join(errors)}). {fix}")


CONVERSION = "c2"  # in the cache key: bumped when the conversion changes (c2: outputs named by key/field)


def to_onnx(path: Path, kind: str, candidates: list[tuple], sha256: str, cache_dir: Path) -> bytes:
    """Convert a TorchScript/torch.export file to ONNX with a dynamic batch axis, for the first candidate input
    shape the model accepts. Cached by content hash and shape, so a second audit does not even import torch."""
    cached = cache_dir / "onnx" / f"{sha256[:32]}-{'x'.join(map(str, candidates[0]))}-{CONVERSION}.onnx"
    if cached.exists():
        _forget_modules()
        used(cached)
        return cached.read_bytes()
    try:
        data = _convert(path, kind, candidates)
    finally:
        _forget_modules()
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cached, data)
    prune_model_cache(cache_dir)
    return data


def _convert(path: Path, kind: str, candidates: list[tuple]) -> bytes:
    torch = _torch(path, kind)

    input_shape = probe_input_shape(path, kind, candidates)
    module = _load_module(path, kind)
    with _quiet(), torch.no_grad():
        try:
            names = output_names(_runnable(module, kind)(_example(input_shape)))
            if kind == "torchscript":
                buffer = io.BytesIO()
                _container_output_as_tuple(module)
                _export_traced(module, _example(input_shape), names, buffer)
                data = buffer.getvalue()
            else:
                program = torch.onnx.export(module, (_example(input_shape),), dynamo=True, verbose=False,
                                            output_names=names)
                data = program.model_proto.SerializeToString()
        except GenauditError:
            raise
        except Exception as exc:
            hint = ("Scripted code that torch's TorchScript-to-ONNX exporter cannot convert (e.g. scripted "
                    "nn.MultiheadAttention, in-place slice assignment) usually converts when traced: audit a "
                    "`torch.jit.trace(model, example)` file, a torch.export (.pt2) archive or an ONNX export of the "
                    "model instead." if kind == "torchscript" else
                    "Export the model to ONNX yourself (`torch.onnx.export(model, example, 'model.onnx')`) and "
                    "audit the .onnx file.")
            raise GenauditError(
                f"{path} could not be converted to ONNX for auditing: {first_line(exc)}. "
                f"{hint}"
            ) from None
    return data


def _export_traced(module, example, names: list[str], target) -> None:
    """torch's TorchScript-based ONNX exporter, as genaudit uses it: opset 17, input 'input', outputs `names`, a
    dynamic batch axis on every one; `target` a path or a binary buffer."""
    import torch

    torch.onnx.export(module, (example,), target, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=names, dynamic_axes={name: {0: "batch"} for name in ["input", *names]})


def export_module(module, example, path: Path) -> None:
    """Write an eager torch module (e.g. one being trained) to `path` as ONNX with a dynamic batch axis, traced on
    `example` (a batch on the module's device). The module is exported in eval mode and left in the mode it was
    in; its weights are not touched."""
    import torch

    training = module.training
    module.eval()
    try:
        with _quiet(), torch.no_grad():
            _export_traced(module, example, output_names(module(example)), str(path))
    except Exception as exc:
        raise GenauditError(
            f"The model could not be exported to ONNX for auditing: {first_line(exc)}. "
            "Pass an example input the model takes (example_input=..., or the LightningModule's "
            "example_input_array)."
        ) from None
    finally:
        module.train(training)


def _runnable(module, kind: str):
    """Something to call on an input: the TorchScript module, or the module of a torch.export program."""
    return module if kind == "torchscript" else module.module()


def output_names(outputs) -> list[str]:
    """ONNX names for a module's outputs as the exporter flattens them: a dict's keys, a named tuple's fields,
    else output_0, output_1, ... (a tensor alone is output_0)."""
    if isinstance(outputs, dict):
        return [str(k) for k in outputs]
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return list(outputs._fields)
    return [f"output_{i}" for i in range(len(outputs) if isinstance(outputs, (tuple, list)) else 1)]


def _container_output_as_tuple(module) -> None:
    """Rewrite a TorchScript forward that returns a dict (or a list) to return its values as a tuple, in order:
    the ONNX exporter has no symbolic for prim::DictConstruct and turns a list into one sequence output. The
    loaded module is changed in place."""
    import torch

    graph = module.forward.graph
    ret = graph.return_node()
    node = ret.input().node()
    if node.kind() not in ("prim::DictConstruct", "prim::ListConstruct"):
        return
    values = list(node.inputs())[1::2] if node.kind() == "prim::DictConstruct" else list(node.inputs())
    as_tuple = graph.create("prim::TupleConstruct", values)
    as_tuple.insertBefore(ret)
    as_tuple.output().setType(torch._C.TupleType([v.type() for v in values]))
    ret.replaceInput(0, as_tuple.output())
    node.destroy()


def sample_input_shape(path: Path) -> tuple | None:
    """A torch.export archive stores example inputs: the per-sample shape of the first one, if present."""
    module = _load_module(path, "export")
    try:
        args, _ = module.example_inputs
        return tuple(args[0].shape[1:])
    except Exception:
        return None

