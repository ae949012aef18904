"""Model sources: a file on disk (ONNX, TorchScript, torch.export) becomes an OnnxGraph that can be cut.

Supported: `.onnx` (incl. external-data side files and fixed batch size), TorchScript (`.pt`/`.pth`/`.ts`,
scripted or traced), torch.export archives (`.pt2`). Pickled `nn.Module` files and bare state_dicts are
refused without being unpickled.

The submodules: `safety` checks a file before any library reads it (no pickle or program that runs code, no
zip bomb, no unbounded declared size); `torch_formats` converts TorchScript and torch.export files to ONNX;
`graph` analyses the ONNX graph (OnnxGraph: outputs, shapes, layers, the default feature layer, valid cuts);
`affine` reads the head of a cut in closed form; `runtime` builds the trunk and head of a cut and runs them in
onnxruntime (CutModel); `cache` keeps analysed graphs, cuts and onnxruntime's optimized cuts, and cuts a model
through it (cut_at); `ops` is the op vocabulary `graph` and `affine` share.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from genaudit.errors import GenauditError, first_line
from genaudit.models.graph import Layer, OnnxGraph
from genaudit.models.cache import cut_at
from genaudit.models.runtime import CutModel, same_layout

# The model formats: a file's suffix -> its kind (what `identify` tells from the content), and a kind -> its name in
# reports. The suffixes are what compare and watch look for in a folder; the format itself is told by content.
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript", ".pt2": "export"}
FORMAT_NAMES = {"onnx": "onnx", "torchscript": "torchscript", "export": "torch.export"}


def formats_read() -> str:
    """The files genaudit reads, for messages: '.onnx, TorchScript (.pt/.pth/.ts) and torch.export (.pt2)'."""
    of = {kind: "/".join(s for s, k in SUFFIXES.items() if k == kind) for kind in FORMAT_NAMES}
    return f"{of['onnx']}, TorchScript ({of['torchscript']}) and torch.export ({of['export']})"


@dataclass
class ModelFile:
    """A model file identified by content: path, sha256 and format ('onnx', 'torchscript', 'export')."""

    path: Path
    sha256: str
    kind: str

    @property
    def format(self) -> str:
        return FORMAT_NAMES[self.kind]


def identify(path: str | Path) -> ModelFile:
    """Hash the file and tell its format from its bytes (never by unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise GenauditError(f"Model file {path} does not exist. Check the path (and that it is a file, not a folder).")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise GenauditError(f"Model file {path} cannot be read: {exc.strerror or exc}. Check its "
                            "permissions.") from None
    if not head:
        raise GenauditError(f"Model file {path} is empty (0 bytes): probably an interrupted copy or export. Copy or "
                            "export it again.")
    sha = digest.hexdigest()
    if zipfile.is_zipfile(path):
        from genaudit.models import safety, torch_formats

        try:
            kind = torch_formats.zip_kind(path)
            if kind in ("pickle", "state_dict"):
                raise torch_formats.refuse(kind, path)
            safety.check_archive(path, kind)  # before torch reads it: no code run, no unbounded memory
        except GenauditError:
            raise
        except Exception as exc:  # a damaged archive: bad central directory, CRC, truncated member
            raise unreadable(path, exc) from None
        return ModelFile(path, sha, kind)
    if head[:1] == b"\x80":  # a raw pickle stream: the legacy torch.save format
        from genaudit.models import torch_formats

        raise torch_formats.refuse("pickle", path)
    return ModelFile(path, sha, "onnx")


def _check_names(graph) -> None:
    """Raise ValueError when a tensor or op name is not valid UTF-8 text (the protobuf parser hands such names
    over as bytes): the mark of a damaged file."""
    names = [name for node in graph.node for name in (*node.input, *node.output, node.op_type, node.name)]
    names += [t.name for t in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)]
    bad = next((name for name in names if not isinstance(name, str)), None)
    if bad is not None:
        raise ValueError(f"a name in the graph is not valid UTF-8 text ({bad[:40]!r})")


def _load_onnx(path: Path, external: list | None = None):
    """The ONNX model in the file, its external-data weights read; `external` (when given) gets the names of the
    tensors whose weights lay in other files."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    from genaudit.models import safety

    try:
        model = onnx.load(str(path), load_external_data=False)
        if not model.graph.node or not model.graph.output:
            raise ValueError("no graph in it")
        _check_names(model.graph)
        safety.check_onnx(model, path)  # declared sizes, and where external data lies, before reading it
        if external is not None:
            from onnx.external_data_helper import _get_all_tensors, uses_external_data

            external.extend(t.name for t in _get_all_tensors(model) if uses_external_data(t))
        load_external_data_for_model(model, str(path.parent))  # external-data weights are read from beside the file
    except GenauditError:
        raise
    except Exception as exc:
        raise GenauditError(
            f"{path} is not a readable model: not a TorchScript/torch.export archive, and as ONNX it failed with "
            f"'{first_line(exc, 200)}'. genaudit reads {formats_read()} files; if the file was truncated in "
            "transfer, copy it again."
        ) from None
    return model


def open_model(file: ModelFile, data_shape: tuple | None, cache_dir: Path, layout: str | None = None,
               output: str | None = None, classes: int | None = None) -> OnnxGraph:
    """Open a model for splitting, its class scores taken from `output` (a name or index; None: chosen, among
    the outputs with at least `classes` values when given: pass the labels' largest value + 1).
    `data_shape` (per sample, C,H,W or D) is needed for TorchScript, which records none: the model is traced
    with the data in `layout`, or in the first layout it accepts.

    Whatever goes wrong reading a damaged file becomes a GenauditError that names the file."""
    try:
        return _open_model(file, data_shape, cache_dir, layout, output, classes)
    except GenauditError:
        raise
    except Exception as exc:  # a damaged file can make any parser fail anyhow (MemoryError, RecursionError ...)
        raise unreadable(file.path, exc) from None


def unreadable(path: Path, exc: BaseException) -> GenauditError:
    """The error for a model file that could not be read (truncated, damaged, or not a model)."""
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return GenauditError(
        f"{path} could not be read as a model ({type(exc).__name__}: {detail}). The file is probably truncated or "
        f"damaged (copy or export it again), or is not a model: genaudit reads {formats_read()} files."
    )


def _open_model(file: ModelFile, data_shape: tuple | None, cache_dir: Path, layout: str | None,
                output: str | None, classes: int | None) -> OnnxGraph:
    if file.kind == "onnx":
        if cache_dir is None:
            return OnnxGraph(_load_onnx(file.path), output, classes)
        return _open_onnx_cached(file, Path(cache_dir), output, classes)
    from genaudit.models import cache, torch_formats

    if data_shape is not None:
        arranged = {"nchw": tuple(data_shape), "flat": (math.prod(data_shape),)}
        if len(data_shape) == 3:
            arranged["nhwc"] = (*data_shape[1:], data_shape[0])
        candidates = [arranged[layout]] if layout in arranged else list(dict.fromkeys(arranged.values()))
    elif file.kind == "export" and (shape := torch_formats.sample_input_shape(file.path)) is not None:
        candidates = [shape]
    else:
        torch_formats._forget_modules()  # the archive was loaded to look for example inputs
        raise GenauditError(
            f"{file.path} does not record the input shape it expects. Pass --input-shape C,H,W (or, for "
            "`score`, --data: the shape is taken from the data)."
        )

    def load() -> OnnxGraph:
        import onnx

        try:
            data = torch_formats.to_onnx(file.path, file.kind, candidates, file.sha256, cache_dir)
            return OnnxGraph(onnx.load_from_string(data), output, classes)
        except GenauditError:
            raise
        except Exception as exc:
            raise unreadable(file.path, exc) from None

    if cache_dir is None:
        return load()
    # the graph's cache entry (see _open_onnx_cached) also names the conversion: its input shapes and version
    key = {**cache.graph_key(file.sha256, output, classes), "conversion": torch_formats.CONVERSION,
           "shapes": [[int(d) for d in shape] for shape in candidates]}
    cached = cache.open_cached(Path(cache_dir), key, load)
    if cached is not None:
        return cached
    graph = load()
    cache.remember_graph(Path(cache_dir), key, graph)
    return graph


def _open_onnx_cached(file: ModelFile, cache_dir: Path, output: str | None, classes: int | None):
    """An ONNX model's graph from the model cache (cache.CachedGraph: no `import onnx`, no shape inference), else
    opened, analysed and stored there, unless its weights lie in external files (which its hash does not cover)."""
    from genaudit.models import cache

    key = cache.graph_key(file.sha256, output, classes)

    def load() -> OnnxGraph:
        try:
            return OnnxGraph(_load_onnx(file.path), output, classes)
        except GenauditError:
            raise
        except Exception as exc:
            raise unreadable(file.path, exc) from None

    cached = cache.open_cached(cache_dir, key, load)
    if cached is not None:
        return cached
    external: list[str] = []
    graph = OnnxGraph(_load_onnx(file.path, external), output, classes)
    if not external:
        cache.remember_graph(cache_dir, key, graph)
    return graph


LAYOUTS = ("nchw", "nhwc", "flat")


def _fits(layout: str, model: tuple, data: tuple, asked: bool) -> bool:
    """Whether data of per-sample shape `data` (C,H,W or D), arranged as `layout`, fits the model's shape."""
    match = lambda want: len(model) == len(want) and all(m in (None, d) for m, d in zip(model, want))  # noqa: E731
    if layout == "flat":
        if len(model) == 1:
            return model[0] in (None, math.prod(data))
        # a reshape that keeps the meaning (1x28x28 -> 28x28x1 or 784x1), or any reshape of the right size if asked
        known = bool(model) and None not in model and math.prod(model) == math.prod(data)
        return known and (asked or same_layout(model, data))
    if len(data) != 3:
        return False
    return match(data) if layout == "nchw" else match((*data[1:], data[0]))


def input_layout(model_shape: tuple, data_shape: tuple, requested: str | None = None) -> str:
    """How to feed images of per-sample shape `data_shape` (C,H,W, or D for vectors) to a model whose declared
    per-sample input is `model_shape`: 'nchw' as they are, 'nhwc' channels-last (TensorFlow/Keras exports),
    or 'flat' as vectors (the runner then gives each vector the model's declared shape, e.g. 784x1).
    Detected from the shapes unless `requested`; raises a GenauditError that names the mismatch and the flag
    that fixes it."""
    if requested is not None and requested not in LAYOUTS:
        raise GenauditError(f"--layout must be one of {', '.join(LAYOUTS)} (got '{requested}').")
    for layout in [requested] if requested else LAYOUTS:
        if _fits(layout, tuple(model_shape), tuple(data_shape), requested is not None):
            return layout
    fmt = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
    fixes = []
    if len(model_shape) == 3 and len(data_shape) == 3:
        channels_last = requested == "nhwc" or (requested is None and model_shape[2] in (1, 3, 4)
                                                 and model_shape[0] not in (1, 3, 4))
        c, hw = (model_shape[2], model_shape[:2]) if channels_last else (model_shape[0], model_shape[1:])
        if c not in (None, data_shape[0]):
            fixes.append(f"--channels {c}")
        if None not in hw and tuple(hw) != tuple(data_shape[1:]):
            fixes.append(f"--resize {hw[0]},{hw[1]}")
        reading = " (read as H x W x C: channels-last)" if channels_last else " (read as C x H x W)"
    else:
        reading = ""
    asked = f" with --layout {requested}" if requested else ""
    hint = (f" Convert the data with {' '.join(fixes)}." if fixes else
            " Use data the model was trained on, --resize/--channels to convert it, or --layout nchw|nhwc|flat "
            "to say how the model takes its input.")
    raise GenauditError(
        f"The model expects inputs of shape {fmt(model_shape)} per sample{reading}, but the data gives "
        f"{fmt(data_shape)} (C x H x W){asked}.{hint}"
    )


__all__ = ["FORMAT_NAMES", "LAYOUTS", "SUFFIXES", "Layer", "ModelFile", "OnnxGraph", "CutModel", "formats_read",
           "identify", "input_layout", "open_model", "cut_at"]
