"""Hostile model files: the checks made before torch, onnx or onnxruntime reads the parts of a file that can run
code or claim memory. Nothing here imports torch or unpickles anything.

What a file that passes can no longer do (each case is tested in tests/test_security_models.py):

- Run code through pickle. torch.export.load (torch/export/pt2_archive/_package.py, torch 2.14) unpickles a
  .pt2's example inputs with `torch.load(weights_only=True)` and, when that fails, again with
  `weights_only=False` (serde/serialize.py `deserialize_torch_artifact`, also used by the legacy-format
  fallback of torch/export/__init__.py); weights and constants the archive marks `use_pickle` with
  `weights_only=False` directly; constants named `opaque_obj_*` with plain `pickle.loads`; `custom_obj_*` with
  TorchScript's unpickler. So every pickle stream in an archive (a *.pkl member, a member whose bytes are a
  pickle, the data.pkl of a torch.save archive inside it) is walked opcode by opcode with
  `pickletools.genops`, nothing executed, and may only name the globals torch's own files use for tensors and
  containers, call only those (REDUCE, NEWOBJ) and set state (BUILD) only on what they made. The members torch
  hands to torch.load must be torch.save archives, custom and opaque objects are refused, and
  torch_formats makes every torch.load torch calls weights-only besides.
- Run code through the program's JSON. torch.export evaluates every `expr_str` with `sympy.sympify` (Python
  `eval`) and pastes parameter names, argument names and pytree keys into the Python source of the module it
  generates (torch.fx codegen): expressions must be sympy constructor calls, names plain dotted identifiers.
- Load native code: an AOTInductor package's shared library is refused.
- Exhaust memory. Every member's declared size is checked against the archive's own size before anything is
  read (a zip bomb is refused from its directory); members are read in chunks, never past their declared
  size; an empty weight record may not declare a shape (torch would allocate it); ONNX external data must lie
  inside a regular file beside the model, and no declared tensor or example input may claim more than
  MAX_TENSOR_BYTES.
"""

from __future__ import annotations

import json
import math
import os
import pickletools
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from genaudit.errors import GenauditError

RATIO = 100  # a compressed member may expand this much (beyond SMALL): torch stores tensors uncompressed
SMALL = 1 << 20  # members this small may compress any amount (text does)
SLACK = 64 << 20  # the declared contents of an archive may reach RATIO x its size plus this
MAX_PARSED = 128 << 20  # a pickle or JSON member is read whole to be checked: no real one comes near
MAX_TENSOR_BYTES = 4 << 30  # what one declared tensor (ONNX initializer, example input) may claim
MAX_DEPTH = 1  # torch.save archives inside an archive are checked; nothing torch reads is nested deeper
CHUNK = 1 << 20

REFUSED = ("Loading it could run code hidden in the file, so genaudit stops before any library reads it. If the "
           "model is yours, export it again with torch (torch.export.save, torch.jit.save or torch.onnx.export) and "
           "audit the new file; otherwise do not load it anywhere.")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _refuse(label: str, what: str) -> GenauditError:
    return GenauditError(f"{label} is refused: {what}. {REFUSED}")


def _bomb(label: str, what: str) -> GenauditError:
    return GenauditError(f"{label} is refused: {what}, which no model file needs (a zip bomb or a damaged file); "
                         "genaudit stops before reading it. Copy or export the model again.")


# ---- archives -------------------------------------------------------------------------------------------------

def open_archive(source: Path | IO[bytes], size: int, label: str) -> zipfile.ZipFile:
    """A zip archive whose directory has been checked: no overlapping members, no member that expands more
    than RATIO to 1 (beyond SMALL), stored members exactly their size, contents at most RATIO x `size` (the
    archive's own size) + SLACK. `label` names the archive in errors."""
    archive = zipfile.ZipFile(source)
    try:
        infos = archive.infolist()
        if (len({info.header_offset for info in infos}) < len(infos)
                or sum(info.compress_size for info in infos) > size):
            raise _bomb(label, "its directory lists members that overlap")
        for info in infos:
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise _bomb(f"{label}: member {info.filename}", f"it declares {info.file_size} bytes but stores "
                            f"{info.compress_size}")
            if info.file_size > RATIO * info.compress_size + SMALL:
                raise _bomb(f"{label}: member {info.filename}",
                            f"it declares {_size(info.file_size)} compressed into {_size(info.compress_size)} "
                            f"({info.file_size // max(info.compress_size, 1)}:1)")
        total = sum(info.file_size for info in infos)
        if total > RATIO * size + SLACK:
            raise _bomb(label, f"its members declare {_size(total)} in a {_size(size)} archive")
    except BaseException:
        archive.close()
        raise
    return archive


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    """A member's bytes, read in chunks and never past its declared size (nor MAX_PARSED)."""
    if info.file_size > MAX_PARSED:
        raise GenauditError(f"{label}: member {info.filename} is {_size(info.file_size)}, too large to be what it "
                            f"claims to be (at most {_size(MAX_PARSED)}): the file is damaged or not a model. Export "
                            "the model again.")
    data = bytearray()
    with archive.open(info) as fh:
        while chunk := fh.read(CHUNK):
            data += chunk
            if len(data) > info.file_size:
                raise _bomb(f"{label}: member {info.filename}", "it holds more bytes than its header declares")
    return bytes(data)


def _head(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with archive.open(info) as fh:
        return fh.read(4)


def _is_pickle(head: bytes) -> bool:
    """Whether bytes start like a pickle stream of protocol 2 or later (what torch and Python write)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def check_archive(path: Path, kind: str) -> None:
    """Refuse a TorchScript ('torchscript') or torch.export ('export') archive that could run code or exhaust
    memory when torch loads it (see the module's docstring)."""
    with open_archive(path, path.stat().st_size, str(path)) as archive:
        _Archive(archive, str(path), TORCHSCRIPT if kind == "torchscript" else TENSORS, 0).check(kind)


class _Archive:
    """One archive being checked, `depth` levels inside the model file. Like torch's reader, it takes the folder
    of the first member as the archive's root: `members` maps the names under it, as torch asks for them, to
    their entries."""

    def __init__(self, archive: zipfile.ZipFile, label: str, allowed: Allowed, depth: int) -> None:
        self.archive, self.label, self.allowed, self.depth = archive, label, allowed, depth
        infos = archive.infolist()
        self.root = infos[0].filename.split("/", 1)[0] + "/" if infos else ""
        self.members = {info.filename[len(self.root):]: info for info in infos if info.filename.startswith(self.root)}

    def check(self, kind: str) -> None:
        raw, unpickled = self._export_layout() if kind == "export" else (self._storages(), set())
        for info in self.archive.infolist():
            name = info.filename[len(self.root):] if info.filename.startswith(self.root) else None
            if name in raw or info.is_dir():
                continue
            head = _head(self.archive, info)
            if head.startswith(b"PK\x03\x04"):
                self._nested(info)
            elif name in unpickled or (kind == "export" and info.filename.endswith(".pt") and info.file_size):
                raise _refuse(f"{self.label}: member {info.filename}", "torch would unpickle it with the unrestricted "
                              "loader, and it is not a torch.save archive as torch.export.save writes")
            elif info.filename.endswith("pkl") or _is_pickle(head):  # .pkl, .debug_pkl, or a pickle by content
                self._pickle(info)
            elif kind == "export" and info.filename.endswith(".json") and not (name or "").startswith("extra/"):
                check_program_json(read_member(self.archive, info, self.label), f"{self.label}: member {info.filename}")

    def _storages(self) -> set[str]:
        """The raw tensor records of a TorchScript or torch.save archive (data/0, data/1 ...): read as bytes."""
        return {name for name in self.members if re.fullmatch(r"data/\d+", name)}

    def _export_layout(self) -> tuple[set[str], set[str]]:
        """A torch.export archive's raw tensor records, and the weights and constants marked use_pickle, which
        torch.load unpickles (as it does every *.pt: the example inputs, the legacy format's parts). Refuses
        AOTInductor code, custom or opaque object constants, and an empty record declaring a shape."""
        members = self.members
        if aoti := next((name for name in members if name.startswith("data/aotinductor/")), None):
            raise _refuse(f"{self.label}: member {members[aoti].filename}", "it is AOTInductor-compiled native code (a "
                          "shared library torch would load and run); genaudit audits the exported program only")
        raw: set[str] = set()
        unpickled: set[str] = set()
        for name, info in members.items():
            config = re.fullmatch(r"(data/(?:weights|constants))/\w+_(?:weights|constants)_config\.json", name)
            if not config:
                continue
            where = f"{self.label}: member {info.filename}"
            try:
                for fqn, meta in json.loads(read_member(self.archive, info, self.label))["config"].items():
                    record = f"{config[1]}/{meta['path_name']}"
                    if meta["path_name"].startswith(("custom_obj_", "opaque_obj_")):
                        raise _refuse(where, f"its constant {fqn} is a pickled Python or TorchScript object, which "
                                      "torch would unpickle without restriction")
                    if meta["use_pickle"]:
                        unpickled.add(record)
                    elif record in members:
                        raw.add(record)
                        if members[record].file_size == 0 and _declared_elements(meta["tensor_meta"]) != 0:
                            raise _bomb(where, f"{fqn} is an empty record with a declared shape (torch would "
                                        "allocate that shape)")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise GenauditError(f"{where} is not the JSON torch.export.save writes: the file is damaged. Copy "
                                    "or export it again.") from None
        return raw - unpickled, unpickled

    def _nested(self, info: zipfile.ZipInfo) -> None:
        label = f"{self.label} › {info.filename}"
        if self.depth >= MAX_DEPTH:
            raise _refuse(label, "archives are nested deeper than torch writes them")
        with self.archive.open(info) as fh, open_archive(fh, info.file_size, label) as inner:
            _Archive(inner, label, TENSORS, self.depth + 1).check("torch.save")

    def _pickle(self, info: zipfile.ZipInfo) -> None:
        where = f"{self.label}: member {info.filename}"
        try:
            check_pickle(read_member(self.archive, info, self.label), self.allowed)
        except Unsafe as exc:
            raise _refuse(where, f"it is a pickle that {exc}") from None
        except ValueError as exc:
            raise GenauditError(f"{where} is not a well-formed pickle ({exc}): the file is damaged or was not "
                                "written by PyTorch. Copy or export it again.") from None


def _declared_elements(meta: object) -> int | None:
    """The number of elements a torch.export tensor_meta declares (None: not a plain list of int sizes)."""
    try:
        return math.prod(size["as_int"] for size in meta["sizes"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


# ---- pickles ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowed:
    """What a pickle may name: `calls` (functions and classes it may call), `classes` (module prefixes whose
    classes it may create and give state: TorchScript's), `builds` (calls whose result may get state) and, as
    mere references, torch's storage types (the persistent ids of tensor data); `opcodes`, if given, the only
    opcodes it may use."""

    calls: frozenset[str]
    builds: frozenset[str] = frozenset()
    classes: tuple[str, ...] = ()
    opcodes: frozenset[str] | None = None

    def may_name(self, name: str) -> bool:
        return self.may_call(name) or re.fullmatch(r"torch\.\w+Storage", name) is not None

    def may_call(self, name: str) -> bool:
        return name in self.calls or name.startswith(self.classes)

    def may_build(self, name: str) -> bool:
        return name in self.builds or name.startswith(self.classes)


# what torch.save writes for tensors and containers (example inputs, state dicts); BUILD: a state dict's _metadata
STATE_DICT = Allowed(frozenset({"torch._utils._rebuild_tensor_v2", "collections.OrderedDict"}),
                     builds=frozenset({"collections.OrderedDict"}))
# the same in the opcodes torch's weights-only unpickler reads (torch/_weights_only_unpickler.py: pickle protocol
# 2): what torch.load may unpickle, which genaudit makes weights-only (torch_formats._weights_only)
TENSORS = replace(STATE_DICT, opcodes=frozenset(
    "GLOBAL NEWOBJ REDUCE BUILD APPEND APPENDS SETITEM SETITEMS MARK TUPLE TUPLE1 TUPLE2 TUPLE3 NONE NEWFALSE NEWTRUE "
    "EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET BININT BININT1 BININT2 BINFLOAT BINUNICODE SHORT_BINSTRING BINPERSID "
    "BINGET LONG_BINGET BINPUT LONG_BINPUT LONG1 PROTO STOP".split()))
# TorchScript (torch.jit.save; what torch/csrc/jit/serialization/pickler.cpp writes): the same, its list and type
# tag helpers, devices, complex numbers, and the classes compiled from the archive's code/ (read by TorchScript's
# C++ unpickler). Quantized and sparse tensors are refused.
TORCHSCRIPT = Allowed(
    STATE_DICT.calls | {"torch.device", "builtins.complex"} | {f"torch.jit._pickle.{name}" for name in (
        "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_tensor_from_id",
        "restore_type_tag")},
    builds=STATE_DICT.builds, classes=("__torch__.",))


class Unsafe(Exception):
    """A pickle does something outside what is allowed (the message says what)."""


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True, eq=False)
class _Made:
    """What a call of an allowed global made."""

    by: str


_MARK, _VALUE = object(), object()
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"}  # change the container under them


def check_pickle(data: bytes, allowed: Allowed) -> None:
    """Walk a pickle stream opcode by opcode, executing nothing, keeping the unpickler's stack and memo as
    symbols: raise Unsafe at the first global `allowed` does not allow, call of anything but an allowed global
    or BUILD on anything but what one made; ValueError if it is not a single well-formed pickle."""
    stack: list = []
    memo: dict = {}
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        if name.startswith("EXT"):
            raise Unsafe("names a function through the copyreg extension registry")
        if allowed.opcodes is not None and name not in allowed.opcodes:
            raise Unsafe(f"uses the opcode {name} of a pickle protocol above 2 (torch.export.save's pickle_protocol: "
                         "keep the default, 2), which torch reads only with its unrestricted loader")
        popped = _pop(stack, op.stack_before)
        if name in ("GLOBAL", "INST"):
            module, _, qualname = arg.partition(" ")
            value: object = _Global(f"{module}.{qualname}")
        elif name == "STACK_GLOBAL":
            if not all(isinstance(part, str) for part in popped):
                raise Unsafe("names a global computed at load time")
            value = _Global(".".join(popped))
        else:
            value = _VALUE if op.arg is None else arg
        if isinstance(value, _Global) and not allowed.may_name(value.name):
            raise Unsafe(f"names {value.name}, which is not a tensor or container type")
        if name in _CALLS:
            target = value if name == "INST" else popped[0]
            if not (isinstance(target, _Global) and allowed.may_call(target.name)):
                raise Unsafe(f"calls {target.name if isinstance(target, _Global) else 'an object it made'}")
            stack.append(_Made(target.name))
        elif name == "BUILD":
            if not (isinstance(popped[0], _Made) and allowed.may_build(popped[0].by)):
                made = popped[0].by if isinstance(popped[0], _Made) else "an object it did not make by a call"
                raise Unsafe(f"sets the state of {made} (BUILD)")
            stack.append(popped[0])
        elif name in _IN_PLACE:
            stack.append(popped[0])
        elif name == "DUP":
            stack += popped * 2
        elif name == "MEMOIZE":
            memo[len(memo)] = popped[0]
            stack.append(popped[0])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not stack:
                raise ValueError(f"{name} on an empty stack at byte {pos}")
            memo[arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise ValueError(f"{name} of an unknown memo entry at byte {pos}")
            stack.append(memo[arg])
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "STOP":
            if pos + 1 != len(data):
                raise ValueError(f"{len(data) - pos - 1} bytes after its end")
        else:
            stack += [value] * len(op.stack_after)


def _pop(stack: list, before: list) -> list:
    """Pop what an opcode consumes: the items above the topmost mark, the mark, and what lies under it."""
    if pickletools.markobject in before:
        if _MARK not in stack:
            raise ValueError("an opcode needs a MARK that is not there")
        top = len(stack) - 1 - stack[::-1].index(_MARK)
        items = stack[top + 1:]
        del stack[top:]
        under = before.index(pickletools.markobject)
    else:
        items, under = [], len(before)
    if under > len(stack):
        raise ValueError("stack underflow")
    popped = stack[len(stack) - under:] + items
    del stack[len(stack) - under:]
    return popped


# ---- torch.export program JSON ---------------------------------------------------------------------------------

# Names torch may paste into the Python code it generates: inside double quotes (torch.fx's getattr(self, "a-b")),
# as identifiers it sanitizes itself, or in a `def` line, where none of these characters can open a string, a call
# or an assignment. '-' is in torchvision's own module names (RegNet's "block1-0").
_NAME = re.compile(r"[A-Za-z0-9_.\-]*")
_FREE_TEXT = {"metadata", "as_string", "torch_version"}  # kept, or repr()'d into code: never evaluated
_SPECS = {"in_spec", "out_spec", "context"}  # pytree specs: JSON inside a string
_SYMPY = frozenset(
    "Symbol Integer Rational Float Mul Add Mod Max Min Abs Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan "
    "LessThan GreaterThan Equality Unequality And Or Not true false BooleanTrue BooleanFalse oo zoo nan floor ceiling "
    "Piecewise ExprCondPair FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv RShift "
    "IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity "
    "FloatTrueDiv IntTrueDiv True False positive negative nonnegative nonpositive integer real finite commutative "
    "zero nonzero even odd precision".split())  # no Pow, PowByNatural, FloatPow, LShift: they build huge numbers
_NUMBER = r"\d{1,40}(?:\.\d{0,40})?(?:e[-+]?\d{1,4})?"
_TOKEN = re.compile(rf"\s*(?:([A-Za-z_]\w*)|{_NUMBER}|'(?:[A-Za-z_]\w{{0,63}}|[-+]?{_NUMBER})'|[-+*/%(),=<>])")


def check_program_json(data: bytes, where: str) -> None:
    """Refuse a torch.export JSON member whose strings torch would evaluate (`expr_str`, via sympy's eval) or
    paste into generated Python code (names, pytree keys) unless they are plain."""
    try:
        todo: list[tuple[object, str]] = [(json.loads(data), "")]
        while todo:
            value, key = todo.pop()
            if key in _FREE_TEXT:
                continue
            if key == "expr_str":
                _check_expression(value, where)
            elif key in _SPECS and isinstance(value, str):
                todo.append((json.loads(value), ""))
            elif isinstance(value, dict):
                for name, item in value.items():
                    _check_name(name, where)
                    todo.append((item, name))
            elif isinstance(value, list):
                todo += [(item, key) for item in value]
            elif isinstance(value, str):
                _check_name(value, where)
    except (ValueError, RecursionError):
        raise GenauditError(f"{where} is not valid JSON: the file is damaged. Copy or export it again.") from None


def _check_name(name: str, where: str) -> None:
    if not _NAME.fullmatch(name):
        raise _refuse(where, f"it holds the name {name[:80]!r}, which torch would paste into Python code it runs "
                      "(names are letters, digits, '_', '.' and '-')")


def _check_expression(expr: object, where: str) -> None:
    """A symbolic shape expression as torch writes it (sympy's srepr: constructor calls on numbers and quoted
    symbol names); torch evaluates it with sympy.sympify, that is Python eval."""
    text = expr if isinstance(expr, str) else ""
    pos, ok = 0, isinstance(expr, str) and len(text) <= 4096
    while ok and pos < len(text.rstrip()):
        token = _TOKEN.match(text, pos)
        ok = token is not None and (token[1] is None or token[1] in _SYMPY)
        pos = token.end() if token else pos
    if not ok:
        raise _refuse(where, f"its symbolic shape expression {str(expr)[:80]!r} is not one torch writes, and torch "
                      "evaluates it as Python code")


# ---- declared sizes ------------------------------------------------------------------------------------------

def check_tensor_bytes(shape: tuple, itemsize: int, what: str) -> None:
    """Refuse a tensor of `shape` that would claim more than MAX_TENSOR_BYTES (`what` names it in the error)."""
    if math.prod(shape) * itemsize > MAX_TENSOR_BYTES:
        raise GenauditError(
            f"{what} would be a tensor of shape {'x'.join(map(str, shape))} ({_size(math.prod(shape) * itemsize)}), "
            f"more than genaudit allocates for one tensor ({_size(MAX_TENSOR_BYTES)}). A model file that declares "
            "such a size is damaged or hostile: export the model again, or pass the input shape it takes with "
            "--input-shape."
        )


def check_onnx(model, path: Path) -> None:
    """Refuse an ONNX model (parsed without its external data) whose initializers or inputs declare a tensor
    over MAX_TENSOR_BYTES, or whose external-data references lead outside its folder, to something that is not
    a regular file, or to bytes the file does not hold: onnx reads whatever they point at (/dev/zero without
    end). Side files that are missing are named all at once."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    graph = model.graph
    for tensor in graph.initializer:
        check_tensor_bytes(tuple(tensor.dims), _itemsize(tensor.data_type), f"{path}: initializer {tensor.name}")
    for value in graph.input:
        dims = tuple(d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value"))
        check_tensor_bytes(dims, _itemsize(value.type.tensor_type.elem_type), f"{path}: input {value.name}")
    folder, missing = Path(os.path.normpath(path.parent)), []
    for tensor in filter(uses_external_data, _get_all_tensors(model)):
        info = ExternalDataInfo(tensor)
        target = Path(os.path.normpath(folder / info.location))
        if Path(info.location).is_absolute() or folder not in target.parents:
            raise GenauditError(f"{path} is refused: its tensor {tensor.name} keeps its data in {info.location!r}, "
                                f"outside the model's folder {folder}. External-data files must lie beside the "
                                "model; export it again or copy it with its data file.")
        if not target.exists():
            missing.append(info.location)
        elif not target.is_file() or (info.offset or 0) + (info.length or 0) > target.stat().st_size:
            raise GenauditError(f"{path} is refused: its tensor {tensor.name} reads {info.length} bytes at offset "
                                f"{info.offset or 0} of {info.location}, which is not a regular file that holds them. "
                                "Copy the model with its data file again, or export it again.")
    if missing:
        raise GenauditError(
            f"{path} keeps its weights in external-data files that are not beside it: "
            f"{', '.join(sorted(set(missing)))}. Copy them into {folder} next to the .onnx file (ONNX reads them by "
            "that relative name)."
        )


def _itemsize(data_type: int) -> int:
    """Bytes per element of an ONNX data type (1 for types numpy cannot hold, e.g. strings or 4-bit ones)."""
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 1


__all__ = ["MAX_TENSOR_BYTES", "STATE_DICT", "TENSORS", "TORCHSCRIPT", "Unsafe", "check_archive", "check_onnx",
           "check_pickle", "check_program_json", "check_tensor_bytes", "open_archive", "read_member"]
