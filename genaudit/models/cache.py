"""The model cache, and cutting a model through it.

A repeated audit of an ONNX file skips loading and analysing the graph (`import onnx`, shape inference to list the
layers), serializing its cut and optimizing the cut's parts: per file content (sha256), genaudit version and --output
choice, a JSON entry holds what the audit asks of the graph (CachedGraph); per cut (layer, extra outputs), an .npz
holds the trunk and head models and the closed-form head; per part of a cut, onnxruntime version, thread count and
CPU, an .onnx holds the part as onnxruntime optimized it, beside a JSON stamp (its key, size and CRC-32). Every entry
stores its whole key and is used only when the key matches exactly (a different file, version or choice never reuses
one); an entry that does not parse, fails its CRC or mismatches is ignored and rebuilt. Entries are written
atomically; a cache that cannot be written is skipped. `cut_at` cuts a model at a layer through the cache (or
without it, for a graph that has no entry) and opens both parts (genaudit.models.runtime runs them)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from genaudit.heads import AffineHead
from genaudit.models.runtime import CPU, CutModel, Runner, head_model, trunk_model
from genaudit.errors import GenauditError

if TYPE_CHECKING:
    from genaudit.models.graph import Layer, OnnxGraph


def cut_at(graph: OnnxGraph | CachedGraph, layer: str | None, extra: Sequence[str] = (),
           threads: int | None = None, providers: Sequence[str] = (CPU,)) -> CutModel:
    """Cut the model at `layer` and open both parts in onnxruntime on `providers` (see providers_for) with
    `threads` intra-op threads each (None: onnxruntime's default); the trunk also returns the `extra` layers' tensors.
    `layer` is a tensor name as `resolve_layer` gives it or `layers()` lists it (taken as it is, not resolved
    again), or None for the default feature layer. The cut's parts come from the model cache when the graph has an
    entry there (see open_cached), and are stored in it when they are built."""
    name = graph.default_layer_name() if layer is None else layer
    parts = _cut_parts(graph, name, tuple(extra))
    return CutModel(
        layer=name,
        op=parts["op"],
        default=parts["default"],
        output_kind=graph.output_kind,
        trunk_runner=_runner(parts, "trunk", threads, providers),
        head_runner=_runner(parts, "head", threads, providers),
        affine=None if parts["affine"] is None else AffineHead(*parts["affine"]),
    )


def _build_cut(graph: OnnxGraph, name: str, extra: tuple) -> dict:
    from genaudit.models.affine import affine_head

    return {"op": graph.op_of(name), "default": graph.is_default(name), "trunk": trunk_model(graph, name, extra),
            "head": head_model(graph, name), "affine": affine_head(graph, name)}


CACHE_FORMAT = "g2"  # bumped when what an entry holds changes (g2: heads with convolutions as matrix products)


def graph_key(sha256: str, output: str | None, classes: int | None) -> dict:
    """The key of a graph entry: the file's content hash, genaudit's version and the choice of output."""
    from genaudit.version import __version__

    return {"format": CACHE_FORMAT, "sha256": sha256, "version": __version__, "output": output, "classes": classes}


def _entry(folder: Path, key: dict, suffix: str) -> Path:
    """The entry's file: named by the model's hash and a hash of the whole key (which the entry also holds)."""
    inner = key
    while "sha256" not in inner:  # a cut's key holds its graph's, an optimized part's its cut's
        inner = inner["graph"] if "graph" in inner else inner["cut"]
    sha = inner["sha256"]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return folder / "graphs" / f"{sha[:16]}-{digest[:32]}{suffix}"


def _write(path: Path, content: Any) -> bool:
    """Write a cache entry atomically, then keep the cache within its bound (`prune_model_cache`); False (and
    nothing written) when the cache cannot be written."""
    from genaudit.files import prune_model_cache, write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, content)
    except (OSError, GenauditError):
        return False
    prune_model_cache(path.parent.parent)
    return True


class CachedGraph:
    """What an audit asks of an OnnxGraph, read from its cache entry: the input shape, the outputs and the chosen
    one, its kind, the layers and the default and early ones. Anything else (another layer name, the graph itself)
    loads and analyses the model (`load`: the OnnxGraph) and asks it."""

    def __init__(self, summary: dict, cache: tuple[Path, dict], load: Callable[[], OnnxGraph]) -> None:
        self._summary, self.cache, self._load = summary, cache, load
        self.input_shape = tuple(summary["input_shape"])
        self.output_names = list(summary["output_names"])
        self.output_index = int(summary["output_index"])
        self.output_name = self.output_names[self.output_index]
        self.output_kind = summary["output_kind"]
        self._layers = [(name, op, tuple(shape), bool(default)) for name, op, shape, default in summary["layers"]]
        self._ops = {name: op for name, op, _, _ in self._layers}
        self._default = summary["default"]
        self._early = summary["early"]

    shapes_inferred = True  # the entry was made after shape inference (see remember_graph)

    @functools.cached_property
    def _real(self) -> OnnxGraph:
        graph = self._load()
        graph._inferred  # the cuts built from it see inferred shapes, as the cached ones did
        return graph

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_summary", "_load"):
            raise AttributeError(name)
        return getattr(self._real, name)

    def output_sizes(self) -> list[int | None]:
        return list(self._summary["output_sizes"])

    def layers(self) -> list[Layer]:
        from genaudit.models.graph import Layer

        return [Layer(*row) for row in self._layers]

    def early_layer(self) -> str | None:
        return self._early

    def default_layer_name(self) -> str:
        return self._default if self._default is not None else self._real.default_layer_name()

    def is_default(self, tensor: str) -> bool:
        return self._default is not None and tensor == self._default

    def resolve_layer(self, name: str | None) -> str:
        if name is None:
            return self.default_layer_name()
        return name if name in self._ops else self._real.resolve_layer(name)

    def op_of(self, tensor: str) -> str:
        return self._ops[tensor] if tensor in self._ops else self._real.op_of(tensor)


def open_cached(folder: Path, key: dict, load: Callable[[], OnnxGraph]) -> CachedGraph | None:
    """The graph's cache entry as a CachedGraph, or None when there is none, or it does not parse or match `key`."""
    from genaudit.files import used

    path = _entry(folder, key, ".json")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("key") != key:
            return None
        graph = CachedGraph(document["summary"], (folder, key), load)
    except Exception:  # missing, unreadable, corrupt or of another shape: rebuilt
        return None
    used(path)
    return graph


def remember_graph(folder: Path, key: dict, graph: OnnxGraph) -> None:
    """Store what CachedGraph answers for `graph` (inferring its shapes) and mark `graph` as cached, so its cuts are
    stored too. Nothing is stored when the analysis fails (the audit then reports it) or the cache is not writable."""
    try:
        layers = graph.layers()
        try:
            default = graph.default_layer_name()
        except GenauditError:
            default = None
        summary = {"input_shape": list(graph.input_shape), "output_names": graph.output_names,
                   "output_index": graph.output_index, "output_kind": graph.output_kind,
                   "output_sizes": graph.output_sizes(), "default": default, "early": graph.early_layer(),
                   "layers": [[lay.name, lay.op, list(lay.shape), lay.default] for lay in layers]}
        text = json.dumps({"key": key, "summary": summary})
    except Exception:
        return
    if _write(_entry(folder, key, ".json"), text):
        graph.cache = (folder, key)


def _cut_parts(graph: OnnxGraph | CachedGraph, name: str, extra: tuple) -> dict:
    """The cut's parts (op, default, trunk and head models, closed-form head), from the cache when the graph has an
    entry there and the cut one, else built (and stored when the graph has an entry). A cached cut's models are
    read only when asked for (`_model`: a session opened from onnxruntime's optimized model needs neither), and the
    parts say where the cut is cached (`cache`: folder and key) and whether it was there already (`reused`)."""
    cache = graph.__dict__.get("cache")
    if cache is None:
        return _build_cut(graph, name, extra)
    folder, graph_entry = cache
    key = {"graph": graph_entry, "layer": name, "extra": list(extra), "inferred": bool(graph.shapes_inferred)}
    path = _entry(folder, key, ".npz")

    @functools.cache
    def built() -> dict:
        parts = _build_cut(graph._real if isinstance(graph, CachedGraph) else graph, name, extra)
        _write(path, lambda fh: _save_cut(fh, key, parts))
        return parts

    parts = _read_cut(path, key)
    if parts is None:
        return {**built(), "cache": (folder, key), "reused": False}
    for part in ("trunk", "head"):  # a model that fails its CRC when it is read is built again
        parts[part] = functools.partial(lambda stored, part: stored() or built()[part], parts[part], part)
    return {**parts, "cache": (folder, key), "reused": True}


def _save_cut(fh, key: dict, parts: dict) -> None:
    meta = {"key": key, "op": parts["op"], "default": parts["default"], "affine": parts["affine"] is not None,
            "trunk": len(parts["trunk"]), "head": len(parts["head"])}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
              "trunk": np.frombuffer(parts["trunk"], np.uint8), "head": np.frombuffer(parts["head"], np.uint8)}
    if parts["affine"] is not None:
        arrays.update(w=parts["affine"][0], b=parts["affine"][1])
    np.savez(fh, **arrays)


def _read_cut(path: Path, key: dict) -> dict | None:
    """A cut's cache entry, or None when there is none or it does not parse or mismatches `key`. Its models are
    not read here: "trunk" and "head" are functions that read them (see `_model`)."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            meta = json.loads(entry["meta"].tobytes().decode("utf-8"))
            if meta["key"] != key:
                return None
            affine = (entry["w"], entry["b"]) if meta["affine"] else None
    except Exception:  # missing, truncated, corrupt: rebuilt
        return None
    from genaudit.files import used

    used(path)
    return {"op": str(meta["op"]), "default": bool(meta["default"]), "affine": affine,
            "trunk": functools.partial(_stored_model, path, "trunk", int(meta["trunk"])),
            "head": functools.partial(_stored_model, path, "head", int(meta["head"]))}


def _stored_model(path: Path, part: str, size: int) -> bytes | None:
    """The serialized `part` model of the cut entry at `path`, or None when it cannot be read, fails its zip CRC or
    is not of the `size` the entry recorded."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            model = entry[part].tobytes()  # zipfile checks the member's CRC
    except Exception:
        return None
    return model if len(model) == size else None


def _model(parts: dict, part: str) -> bytes:
    """The serialized `part` ("trunk" or "head") of the cut, read from its cache entry when it has one."""
    model = parts[part]
    return model() if callable(model) else model


# ---- onnxruntime's optimized models ------------------------------------------------------------------------------
# onnxruntime optimizes a graph as it opens it (fusions, the CPU's memory layouts): about 0.04 s of a ResNet-18's
# 0.06 s. The cut's parts are cached as onnxruntime optimized them, per cut, part, onnxruntime version, thread count
# and CPU (an optimized graph holds layouts for the CPU it was made on), beside a small entry holding that key and
# the file's size and CRC-32; they are opened as they are, which gives the same outputs bit for bit. Only CPU
# sessions are cached.


@functools.lru_cache(maxsize=1)
def _cpu() -> str:
    """The CPU this process runs on, as a digest of its model name and instruction-set flags."""
    import platform

    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text += "".join(line for line in fh if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _runner(parts: dict, part: str, threads: int | None, providers: Sequence[str]) -> Runner:
    """The cut's `part` opened in onnxruntime: from onnxruntime's optimized model in the cache when it is there and
    whole, else from the model. The optimized version is stored when the cut itself came from the cache: a file
    audited a second time is likely audited again (a CI gate, a re-score), while a first audit (each checkpoint of
    a `compare`) would pay the save and 45 MB per ResNet-18 for nothing."""
    if "cache" not in parts or list(providers) != [CPU]:
        return Runner(_model(parts, part), part, threads, providers)
    import onnxruntime as ort

    from genaudit.files import used

    folder, cut_key = parts["cache"]
    key = {"cut": cut_key, "part": part, "onnxruntime": ort.__version__, "threads": threads, "cpu": _cpu()}
    path, stamp = _entry(folder, key, ".onnx"), _entry(folder, key, ".json")
    if _whole(path, stamp, key):
        try:
            runner = Runner(path, part, threads, providers)
        except GenauditError:  # onnxruntime cannot open it after all: made again below
            pass
        else:
            used(path), used(stamp)
            return runner
    model = _model(parts, part)
    if not parts["reused"]:
        return Runner(model, part, threads, providers)
    return _optimized(model, part, threads, providers, path, (stamp, key))


def _whole(path: Path, stamp: Path, key: dict) -> bool:
    """Whether the optimized model at `path` is there, of `key`, and of the size and CRC-32 its stamp records."""
    import zlib

    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        content = path.read_bytes()
    except Exception:  # missing, unreadable, corrupt: made again
        return False
    return (isinstance(recorded, dict) and recorded.get("key") == key and len(content) == recorded.get("bytes")
            and zlib.crc32(content) == recorded.get("crc32"))


def _optimized(model: bytes, part: str, threads: int | None, providers: Sequence[str], path: Path,
               stamp: tuple[Path, dict]) -> Runner:
    """`model` opened in onnxruntime, which writes it as optimized to a temporary file then moved to `path`, its
    stamp (file, key) written beside it; opened without saving when the cache cannot be written or onnxruntime
    cannot save the graph (e.g. one too large for a single file)."""
    import zlib

    from genaudit.files import TEMPORARY, plain_mode

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY, suffix=".onnx")
        os.close(fd)
    except OSError:
        return Runner(model, part, threads, providers)
    temporary = Path(name)
    try:
        try:
            runner = Runner(model, part, threads, providers, save=temporary)
        except GenauditError:
            return Runner(model, part, threads, providers)
        content = temporary.read_bytes()
        if content:
            plain_mode(temporary)
            os.replace(temporary, path)
            _write(stamp[0], json.dumps({"key": stamp[1], "bytes": len(content), "crc32": zlib.crc32(content)}))
    except OSError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return runner
