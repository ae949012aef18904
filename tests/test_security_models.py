"""Hostile model files: archives whose pickles or program JSON run code when torch loads them, zip bombs and
declared shapes that claim unbounded memory. Each is built here from a legitimate file, and must be refused with
one message naming the member, before torch reads it, without its payload ever running; legitimate
torch.export and TorchScript files still load."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SAMPLE_MODELS, assert_user_error
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from typer.testing import CliRunner

from genaudit.cli import app
from genaudit.errors import GenauditError
from genaudit.models import identify, open_model, safety, torch_formats

PT2 = SAMPLE_MODELS / "mlp_clean.pt2"  # members under mlp_clean/; input 1x28x28
INPUTS = "data/sample_inputs/model.pt"  # its example inputs: a torch.save archive inside it
TS = SAMPLE_MODELS / "mlp_clean.pt"
STATE_DICT = SAMPLE_MODELS / "mlp_clean.state_dict.pth"
runner = CliRunner()


class Payload:
    """Unpickling this runs `exec`, which creates the marker file (a stand-in for what an attack would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return exec, (f"open({self.marker!r}, 'w').close()",)


class ShellPayload(Payload):
    """The same through a shell: os.system (pickled as posix.system)."""

    def __reduce__(self) -> tuple:
        return os.system, (f"touch '{self.marker}'",)


def payload(marker: Path, protocol: int = 2, kind: type = Payload) -> bytes:
    return pickle.dumps(kind(marker), protocol=protocol)


def torch_save_zip(pkl: bytes) -> bytes:
    """A torch.save archive whose data.pkl is `pkl`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in (("data.pkl", pkl), ("byteorder", b"little"), ("version", b"3\n")):
            archive.writestr(f"archive/{name}", data)
    return out.getvalue()


def rewrite(src: Path, dst: Path, replace: dict | None = None, add: dict | None = None) -> Path:
    """Copy archive `src` to `dst`, the members ending with a key of `replace` replaced by its value (bytes, or a
    function of the old bytes), the members in `add` added under the archive's root folder."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        root = old.namelist()[0].split("/")[0]
        for info in old.infolist():
            data = old.read(info)
            for suffix, value in replace.items():
                if info.filename.endswith(suffix):
                    data = value(data) if callable(value) else value
            new.writestr(info.filename, data)
        for name, data in add.items():
            new.writestr(f"{root}/{name}", data)
    return dst


def edit_json(edit):
    """A `rewrite` replacement that edits a JSON member in place."""
    def apply(data: bytes) -> str:
        document = json.loads(data)
        edit(document)
        return json.dumps(document)
    return apply


def add_constant(path_name: str):
    return {"model_constants_config.json": edit_json(lambda d: d["config"].update(
        evil={"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}))}


def mark_weight_pickled(document: dict) -> None:
    document["config"]["fc3.bias"]["use_pickle"] = True


def symbolic_payload(marker: Path):
    def edit(document: dict) -> None:
        document["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0] = {
            "as_expr": {"expr_str": f"__import__('os').system('touch {marker}')", "hint": {"as_int": 2}}}
    return edit


def injected_name(marker: Path):
    """A parameter name that torch.fx pastes into the forward() it generates, breaking out of its quotes."""
    evil = json.dumps('fc1.w", getattr(__import__("os"), "system")("touch ' + str(marker) + '"), "')
    return lambda data: data.decode().replace('"fc1.weight"', evil)


def argument_payload(marker: Path):
    """An argument name that torch.fx pastes into the `def forward(...)` line it generates."""
    def edit(document: dict) -> None:
        signature = document["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"x=__import__('os').system('touch {marker}')"]
    return edit


def legacy_layout(marker: Path, path: Path) -> Path:
    """A legacy-format torch.export archive: torch.export.load falls back to it when the current format fails,
    and deserializes its parts with torch.load, retrying with weights_only=False."""
    with zipfile.ZipFile(PT2) as legit:
        program = legit.read("mlp_clean/models/model.json")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (("version", b"8.20"), ("serialized_exported_program.json", program),
                           ("serialized_state_dict.pt", b""), ("serialized_constants.pt", payload(marker)),
                           ("serialized_example_inputs.pt", b""), ("x/models/model.json", program)):
            archive.writestr(name, data)
    return path


# (file, member the message must name, build(marker, path) -> path)
HOSTILE = {
    "pt2 example inputs: raw pickle": (
        PT2, "mlp_clean/data/sample_inputs/model.pt", lambda m, p: rewrite(PT2, p, {INPUTS: payload(m)})),
    "pt2 example inputs: torch.save archive": (
        PT2, "archive/data.pkl", lambda m, p: rewrite(PT2, p, {INPUTS: torch_save_zip(payload(m))})),
    "pt2 example inputs: os.system": (
        PT2, "archive/data.pkl", lambda m, p: rewrite(PT2, p, {INPUTS: torch_save_zip(payload(m, kind=ShellPayload))})),
    "pt2 example inputs: protocol 4, STACK_GLOBAL from the memo": (
        PT2, "archive/data.pkl", lambda m, p: rewrite(PT2, p, {INPUTS: torch_save_zip(payload(m, 4))})),
    "pt2 weight marked use_pickle": (
        PT2, "weights/weight_5",
        lambda m, p: rewrite(PT2, p, {"model_weights_config.json": edit_json(mark_weight_pickled),
                                      "data/weights/weight_5": torch_save_zip(payload(m))})),
    "pt2 constant marked use_pickle": (
        PT2, "constants/tensor_0",
        lambda m, p: rewrite(PT2, p, add_constant("tensor_0"), {"constants/tensor_0": torch_save_zip(payload(m))})),
    "pt2 opaque constant (pickle.loads)": (
        PT2, "model_constants_config.json",
        lambda m, p: rewrite(PT2, p, add_constant("opaque_obj_0"), {"data/constants/opaque_obj_0": payload(m)})),
    "pt2 custom-object constant": (
        PT2, "model_constants_config.json",
        lambda m, p: rewrite(PT2, p, add_constant("custom_obj_0"), {"data/constants/custom_obj_0": payload(m)})),
    "pt2 extra .pkl member": (PT2, "mlp_clean/evil.pkl", lambda m, p: rewrite(PT2, p, add={"evil.pkl": payload(m)})),
    "pt2 pickle under another name": (
        PT2, "mlp_clean/extra/notes.bin", lambda m, p: rewrite(PT2, p, add={"extra/notes.bin": payload(m)})),
    "pt2 legacy-format fallback": (PT2, "serialized_constants.pt", legacy_layout),
    "pt2 sympy expression (eval)": (
        PT2, "mlp_clean/models/model.json",
        lambda m, p: rewrite(PT2, p, {"models/model.json": edit_json(symbolic_payload(m))})),
    "pt2 parameter name pasted into generated code": (
        PT2, "mlp_clean/data/weights/model_weights_config.json",
        lambda m, p: rewrite(PT2, p, {"model.json": injected_name(m), "weights_config.json": injected_name(m)})),
    "pt2 argument name pasted into generated code": (
        PT2, "mlp_clean/models/model.json",
        lambda m, p: rewrite(PT2, p, {"model.json": edit_json(argument_payload(m))})),
    "pt2 AOTInductor shared library": (
        PT2, "mlp_clean/data/aotinductor/model/model.so",
        lambda m, p: rewrite(PT2, p, add={"data/aotinductor/model/model.so": b"\x7fELF" + bytes(64)})),
    "TorchScript constants.pkl": (
        TS, "mlp_clean/constants.pkl", lambda m, p: rewrite(TS, p, {"constants.pkl": payload(m)})),
    "TorchScript data.pkl": (TS, "mlp_clean/data.pkl", lambda m, p: rewrite(TS, p, {"/data.pkl": payload(m)})),
    "TorchScript debug_pkl": (
        TS, "mlp_clean/code/__torch__.py.debug_pkl",
        lambda m, p: rewrite(TS, p, {"__torch__.py.debug_pkl": payload(m)})),
}


def build(case: str, folder: Path) -> tuple[Path, Path, str]:
    """The hostile file of `case` in `folder`, the marker its payload would create, the member to be named."""
    source, member, make = HOSTILE[case]
    marker = folder / "PAYLOAD-RAN"
    return make(marker, folder / f"model{source.suffix}"), marker, member


def test_the_payloads_run_when_unpickled(tmp_path):
    """The payloads are live: the tests below would catch them running."""
    for kind in (Payload, ShellPayload):
        marker = tmp_path / f"{kind.__name__}-ran"
        pickle.loads(payload(marker, kind=kind))
        assert marker.exists()


@pytest.mark.parametrize("case", ["pt2 example inputs: raw pickle", "pt2 weight marked use_pickle",
                                  "pt2 sympy expression (eval)"])
def test_torch_export_load_alone_runs_them(tmp_path, case):
    """What genaudit guards against: torch.export.load (torch 2.14) runs these payloads itself. Should a torch
    release stop one, drop it from this list: genaudit's refusal of it stays."""
    import torch

    path, marker, _ = build(case, tmp_path)
    try:
        torch.export.load(str(path))
    except Exception:
        pass  # the payload has run by then
    assert marker.exists()


@pytest.mark.parametrize("case", ["pt2 example inputs: raw pickle", "pt2 weight marked use_pickle"])
def test_torch_loads_nothing_unrestricted_inside_genaudit(tmp_path, case):
    """The second line, behind the archive check: while genaudit has torch read an archive, every torch.load is
    weights-only, even the ones torch makes with weights_only=False or as a fallback."""
    import torch

    path, marker, _ = build(case, tmp_path)
    with torch_formats._weights_only(), pytest.raises(Exception):
        torch.export.load(str(path))
    assert not marker.exists() and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


@pytest.fixture
def no_unpickling(monkeypatch):
    """torch and pickle may not be asked to read anything."""
    import torch

    def forbidden(*args, **kwargs):
        raise AssertionError("a hostile file reached torch or pickle")

    for owner, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (torch.export, "load"),
                        (torch.jit, "load")):
        monkeypatch.setattr(owner, name, forbidden)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_archive_is_refused_before_torch_reads_it(tmp_path, case, no_unpickling):
    path, marker, member = build(case, tmp_path)
    with pytest.raises(GenauditError) as refused:
        identify(path)
    assert member in str(refused.value), str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_archive_ends_the_cli_with_one_message(tmp_path, case):
    path, marker, member = build(case, tmp_path)
    for command in (["layers", path, "--input-shape", "1,28,28"],
                    ["score", path, "--data", "sample", "--samples", 50, "--json", tmp_path / "card.json"]):
        assert_user_error(runner.invoke(app, [str(a) for a in command]), member)
        assert not marker.exists() and not (tmp_path / "card.json").exists()


@pytest.mark.parametrize("name, plain", [
    ("trunk_output.block1.block1-0.proj.0.weight", True),  # torchvision's RegNet: a '-' in a module name
    ("fc1.weight", True),
    ('fc1.w", getattr(__import__("os"), "system")("id"), "', False),  # out of torch.fx's quotes
    ("x=__import__('os').system('id')", False),  # into a `def forward(...)` line
    ("fc1.weight\n", False),
])
def test_program_names_pass_only_when_plain(name, plain):
    """A name torch pastes into generated code passes only if it can neither close a string nor call anything."""
    document = json.dumps({"graph_module": {"names": [name]}, name: 1}).encode()
    if plain:
        safety.check_program_json(document, "model.json")
    else:
        with pytest.raises(GenauditError, match="paste into Python code"):
            safety.check_program_json(document, "model.json")


def test_open_model_checks_the_archive_again_when_torch_reads_it(tmp_path, no_unpickling):
    """A ModelFile made without identify() (or a file swapped after it) is still checked before torch loads it."""
    from genaudit.models import ModelFile

    path, marker, member = build("pt2 example inputs: torch.save archive", tmp_path)
    with pytest.raises(GenauditError, match=member):
        open_model(ModelFile(path, "0" * 64, "export"), None, tmp_path)
    assert not marker.exists()


# ---- the pickle walk -------------------------------------------------------------------------------------------

def test_the_pickle_walk_allows_tensors_and_containers_only():
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2, 3), "n": torch.arange(3), "nested": [(1, 2.5, "x", None, True)]}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        safety.check_pickle(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))),
                            safety.TENSORS)  # torch.save's own pickle, as torch.load reads it
    refusals = {
        payload(Path("m")): "names __builtin__.exec",
        b"\x80\x02ctorch\nFloatStorage\nK\x05\x85R.": "calls torch.FloatStorage",  # allocating a storage
        b"\x80\x02}}b.": "sets the state",  # BUILD on a dict it did not make
        b"\x80\x02\x82\x01.": "extension registry",  # EXT1: a function by number
        b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94h\x00h\x01\x93.": "names builtins.eval",  # memo-built name
        b"\x80\x04K\x01K\x02\x93.": "computed at load time",  # STACK_GLOBAL of non-strings
        b"\x80\x02ccollections\nOrderedDict\n)R)R.": "calls an object it made",
    }
    for data, why in refusals.items():
        with pytest.raises(safety.Unsafe, match=why):
            safety.check_pickle(data, safety.STATE_DICT)
    framed = pickle.dumps(collections.OrderedDict(a=1), protocol=4)  # what torch.load reads only unrestricted
    safety.check_pickle(framed, safety.STATE_DICT)
    with pytest.raises(safety.Unsafe, match="opcode FRAME"):
        safety.check_pickle(framed, safety.TENSORS)
    for damaged in (pickle.dumps(1, protocol=2) + b"more", b"\x80\x02K\x01", b"\x80\x02h\x07."):
        with pytest.raises(ValueError):
            safety.check_pickle(damaged, safety.TENSORS)


# ---- memory ----------------------------------------------------------------------------------------------------

def write_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]], aliases: int = 0) -> Path:
    """A zip written by hand, so that a member's stored bytes and declared size can be anything: entries are
    (name, stored bytes, method, declared size, crc); `aliases` more directory entries point at the first
    member's bytes (the overlapping-entries bomb)."""
    body, rows = bytearray(), []
    for name, data, method, size, crc in entries:
        rows.append((name.encode(), method, crc, len(data), size, len(body)))
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(rows[-1][0]),
                            0) + rows[-1][0] + data
    rows += [(rows[0][0] + b".%d" % i, *rows[0][1:]) for i in range(aliases)]
    directory = b"".join(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, stored, size,
                                     len(name), 0, 0, 0, 0, 0, offset) + name
                         for name, method, crc, stored, size, offset in rows)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(rows), len(rows), len(directory), len(body), 0)
    path.write_bytes(bytes(body) + directory + end)
    return path


def zeros_deflated(mib: int) -> tuple[bytes, int, int]:
    """`mib` MiB of zeros as one deflate stream (built block by block in a second), its size and CRC-32."""
    block = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    return chunk * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), mib << 20, crc


def with_bomb(source: Path, member: str, path: Path) -> Path:
    """`source` with its member ending in `member` replaced by 2 GiB of zeros, deflated to 2 MB."""
    data, size, crc = zeros_deflated(2048)
    with zipfile.ZipFile(source) as archive:
        entries = [(i.filename, data, zipfile.ZIP_DEFLATED, size, crc) if i.filename.endswith(member) else
                   (i.filename, archive.read(i), zipfile.ZIP_STORED, i.file_size, i.CRC) for i in archive.infolist()]
    return write_zip(path, entries)


PEAK = """
import sys
from typer.testing import CliRunner
from genaudit.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(result.exit_code, int(peak.split()[1]) // 1024, " ".join(result.output.split()), sep="\\n")
"""


@pytest.mark.parametrize("source, member", [(PT2, "sample_inputs/model.pt"), (TS, "constants.pkl"),
                                            (STATE_DICT, "data.pkl")])
def test_a_zip_bomb_is_refused_from_its_directory_in_bounded_memory(tmp_path, source, member):
    """A member declaring 2 GiB in 2 MB: refused before a byte of it is inflated (it cost a 2 GB peak, or an
    out-of-memory kill, when torch or the classification read it)."""
    path = with_bomb(source, member, tmp_path / f"bomb{source.suffix}")
    assert path.stat().st_size < 3_000_000
    done = subprocess.run([sys.executable, "-c", PEAK, "layers", str(path), "--input-shape", "1,28,28"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    code, peak_mb, output = done.stdout.splitlines()
    assert code == "2" and member in output and "zip bomb" in output and "Traceback" not in output, done.stdout
    assert int(peak_mb) < 400, f"peak RSS {peak_mb} MB"


def test_overlapping_and_lying_members_are_refused(tmp_path):
    with zipfile.ZipFile(PT2) as archive:
        entries = [(i.filename, archive.read(i), zipfile.ZIP_STORED, i.file_size, i.CRC) for i in archive.infolist()]
    assert identify(write_zip(tmp_path / "plain.pt2", entries)).kind == "export"  # the hand-written zip is sound
    # 200 more directory entries for the first member's 400 kB: 80 MB declared by a 0.4 MB file
    with pytest.raises(GenauditError, match="members that overlap"):
        identify(write_zip(tmp_path / "overlap.pt2", entries, aliases=200))
    lying = [(n, d, m, s * 2 if n.endswith("model.json") else s, c) for n, d, m, s, c in entries]
    with pytest.raises(GenauditError, match="model.json is refused: it declares"):
        identify(write_zip(tmp_path / "lying.pt2", lying))


def test_a_pickle_member_is_read_only_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(safety, "MAX_PARSED", 500)
    with pytest.raises(GenauditError, match="member mlp_clean/data.pkl is 895 bytes, too large"):
        identify(TS)


def test_an_empty_weight_record_cannot_declare_a_shape(tmp_path):
    """torch.export.load allocates the declared shape of an empty weight record: 60000x60000 floats, 14 GB."""
    def huge(document: dict) -> None:
        meta = document["config"]["fc3.bias"]["tensor_meta"]
        meta["sizes"], meta["strides"] = [{"as_int": 60000}] * 2, [{"as_int": 60000}, {"as_int": 1}]

    path = rewrite(PT2, tmp_path / "m.pt2", {"model_weights_config.json": edit_json(huge), "weights/weight_5": b""})
    with pytest.raises(GenauditError, match="fc3.bias is an empty record"):
        identify(path)


def test_an_example_input_may_not_claim_more_than_the_limit(tmp_path):
    """A tiny file can declare an example input of any shape (stride 0): the input genaudit makes from it is
    bounded before it is allocated."""
    import torch

    buffer = io.BytesIO()
    torch.save(((torch.zeros(1).as_strided((2, 1, 60000, 60000), (0, 0, 0, 0)),), {}), buffer)
    path = rewrite(PT2, tmp_path / "m.pt2", {INPUTS: buffer.getvalue()})
    result = runner.invoke(app, ["layers", str(path)])
    assert_user_error(result, "shape 2x1x60000x60000", "--input-shape")


# ---- ONNX ------------------------------------------------------------------------------------------------------

def onnx_variant(tmp_path: Path, change) -> Path:
    model = onnx.load(str(SAMPLE_MODELS / "mlp_clean.onnx"))
    change(model)
    onnx.save(model, str(tmp_path / "model.onnx"))
    return tmp_path / "model.onnx"


def huge_input(model) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    del dims[:]
    for size in (1, 100_000, 100_000):
        dims.add().dim_value = size


def huge_initializer(model) -> None:
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    del init.dims[:]
    init.dims.extend([100_000, 100_000])


def external(location: str, offset: int = 0, length: int = 40 * 10**9):
    def change(model) -> None:
        init = model.graph.initializer[0]
        init.ClearField("raw_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
    return change


def test_onnx_declared_sizes_are_bounded(tmp_path):
    model = onnx.load(str(SAMPLE_MODELS / "mlp_clean.onnx"))
    for change, named in ((huge_input, f"input {model.graph.input[0].name} would be a tensor of shape 1x100000x100000"),
                          (huge_initializer, f"initializer {model.graph.initializer[0].name} would be a tensor")):
        assert_user_error(runner.invoke(app, ["layers", str(onnx_variant(tmp_path, change))]), named)


def test_onnx_external_data_must_be_a_regular_file_beside_the_model_holding_the_bytes(tmp_path):
    (tmp_path / "zero.bin").symlink_to("/dev/zero")  # onnx would read 40 GB from it
    (tmp_path / "small.bin").write_bytes(bytes(100))
    for location, offset, length, why in (("zero.bin", 0, 40 * 10**9, "not a regular file"),
                                          ("small.bin", 64, 400, "not a regular file that holds them"),
                                          ("../outside.bin", 0, 4, "outside the model's folder"),
                                          ("/etc/passwd", 0, 4, "outside the model's folder")):
        path = onnx_variant(tmp_path, external(location, offset, length))
        with pytest.raises(GenauditError, match=why):
            open_model(identify(path), None, tmp_path)
    assert_user_error(runner.invoke(app, ["layers", str(path)]), "outside the model's folder")


def test_onnx_external_data_in_range_still_loads(tmp_path):
    onnx.save(onnx.load(str(SAMPLE_MODELS / "mlp_clean.onnx")), str(tmp_path / "model.onnx"),
              save_as_external_data=True, location="weights.bin", size_threshold=0)
    graph = open_model(identify(tmp_path / "model.onnx"), None, tmp_path)
    weights = {t.name: numpy_helper.to_array(t) for t in graph.model.graph.initializer}
    original = onnx.load(str(SAMPLE_MODELS / "mlp_clean.onnx")).graph.initializer
    assert len(weights) == len(original) and all(np.array_equal(weights[t.name], numpy_helper.to_array(t))
                                                 for t in original)


# ---- what still loads ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def legit(tmp_path_factory) -> dict[str, Path]:
    """torch.export and TorchScript files as torch writes them: batch norm (running statistics, a long counter),
    float64/int64 buffers and constants, keyword example inputs, a dynamic batch (symbolic shapes), a scripted
    module holding a device and a complex number; and an archive saved with pickle protocol 4."""
    import torch
    from torch import nn

    folder = tmp_path_factory.mktemp("legit")
    torch.manual_seed(0)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)
            self.register_buffer("offset", torch.arange(3, dtype=torch.float64))
            self.scale, self.order = torch.tensor([2.0, 3.0, 4.0]), torch.tensor([2, 0, 1])
            self.place, self.phase = torch.device("cpu"), 1 + 2j

        def forward(self, x):
            out = self.head(torch.relu(self.norm(self.conv(x))).mean((2, 3))) * self.scale + self.offset.float()
            return out[:, self.order]

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Conv()

        def forward(self, x, mask=None):
            return self.net(x) if mask is None else self.net(x) * mask

    x = torch.randn(2, 1, 8, 8)
    paths = {}
    for name, module, kwargs, dynamic, protocol in (
            ("eval", Conv().eval(), {}, None, 2), ("train", Conv().train(), {}, None, 2),
            ("kwargs", Masked().eval(), {"mask": torch.ones(2, 3)}, None, 2),
            ("dynamic", Conv().eval(), {}, ({0: torch.export.Dim("batch", min=2)},), 2),
            ("protocol 4", Conv().eval(), {}, None, 4)):
        paths[name] = folder / f"{name}.pt2"
        program = torch.export.export(module, (x,), kwargs, dynamic_shapes=dynamic)
        torch.export.save(program, str(paths[name]), pickle_protocol=protocol)
    paths["scripted"] = folder / "scripted.pt"
    torch.jit.script(Conv().eval()).save(str(paths["scripted"]))
    paths["traced"] = folder / "traced.pt"
    with torch.no_grad():
        torch.jit.trace(Conv().eval(), x).save(str(paths["traced"]))
    return paths


def test_files_as_torch_writes_them_pass(legit):
    kinds = {name: identify(path).kind for name, path in legit.items() if name != "protocol 4"}
    assert kinds == {"eval": "export", "train": "export", "kwargs": "export", "dynamic": "export",
                     "scripted": "torchscript", "traced": "torchscript"}
    with zipfile.ZipFile(legit["dynamic"]) as archive:  # the check read symbolic shapes
        assert b"expr_str" in archive.read("dynamic/models/model.json")
    with zipfile.ZipFile(legit["scripted"]) as archive:  # and TorchScript's devices and complex numbers
        named = {arg for op, arg, _ in pickletools.genops(archive.read("scripted/data.pkl")) if op.name == "GLOBAL"}
        assert {"torch device", "builtins complex"} <= named
    for path in [*SAMPLE_MODELS.glob("*.pt"), *SAMPLE_MODELS.glob("*.pt2"),
                 *(SAMPLE_MODELS.parent / "tests/fixtures/real_models").glob("*.ts")]:
        assert identify(path).kind in ("export", "torchscript")


def test_pickle_protocol_4_is_refused_as_torch_cannot_load_it_restricted(legit):
    """torch's weights-only unpickler reads protocol 2 only: torch.export.load gets a protocol-4 archive's example
    inputs from its unrestricted fallback, which genaudit never allows."""
    with pytest.raises(GenauditError, match=r"sample_inputs/model.pt: member archive/data.pkl is refused: it is a "
                                            r"pickle that uses the opcode FRAME of a pickle protocol above 2"):
        identify(legit["protocol 4"])


@pytest.mark.parametrize("name", ["dynamic", "scripted", "traced"])
def test_they_still_convert_and_audit(legit, name, tmp_path):
    graph = open_model(identify(legit[name]), (1, 8, 8), tmp_path)
    assert graph.layers()


# ---- fuzzing ---------------------------------------------------------------------------------------------------

with zipfile.ZipFile(PT2) as _archive:
    INPUTS_ZIP = _archive.read(f"mlp_clean/{INPUTS}")
with zipfile.ZipFile(io.BytesIO(INPUTS_ZIP)) as _inputs:
    INPUTS_PKL = _inputs.read("archive/data.pkl")


def inputs_with(pkl: bytes) -> bytes:
    """The example inputs' torch.save archive with its data.pkl replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(INPUTS_ZIP)) as old, zipfile.ZipFile(out, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, pkl if info.filename == "archive/data.pkl" else old.read(info))
    return out.getvalue()
GLOBALS = [("builtins", "exec"), ("builtins", "eval"), ("os", "system"), ("posix", "system"),
           ("subprocess", "getoutput"), ("torch", "load"), ("torch.serialization", "load"), ("numpy", "load")]


@st.composite
def mutated_pickles(draw) -> tuple:
    """A change to the example inputs' pickle of a legit .pt2: bytes flipped, a small integer (a size, a stride,
    an offset) changed, cut short, or a call of a dangerous global inserted between two opcodes (by GLOBAL or by
    STACK_GLOBAL); and where the result goes."""
    kind = draw(st.sampled_from(["flip", "number", "truncate", "call", "stack-call"]))
    if kind == "number":
        change = (draw(st.sampled_from([pos for op, _, pos in pickletools.genops(INPUTS_PKL) if op.name == "BININT1"])),
                  draw(st.integers(0, 255)))
    elif kind == "flip":
        change = draw(st.lists(st.tuples(st.integers(2, len(INPUTS_PKL) - 1), st.integers(1, 255)), min_size=1,
                               max_size=4))
    elif kind == "truncate":
        change = draw(st.integers(1, len(INPUTS_PKL) - 1))
    else:
        change = (draw(st.sampled_from([pos for _, _, pos in pickletools.genops(INPUTS_PKL)][1:])),
                  draw(st.sampled_from(GLOBALS)))
    return kind, change, draw(st.sampled_from(["example inputs", "extra .pkl member"]))


def mutate(data: bytes, kind: str, change, marker: Path) -> bytes:
    if kind == "flip":
        out = bytearray(data)
        for offset, mask in change:
            out[offset] ^= mask
        return bytes(out)
    if kind == "truncate":
        return data[:change]
    if kind == "number":
        return data[:change[0] + 1] + bytes([change[1]]) + data[change[0] + 2:]
    at, (module, name) = change
    code = f"open({str(marker)!r}, 'w').close()" if name in ("exec", "eval") else f"touch {marker}"
    arg = code.encode()
    named = (b"c" + f"{module}\n{name}\n".encode() if kind == "call" else
             b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93")
    call = named + b"X" + struct.pack("<I", len(arg)) + arg + b"\x85R0"  # name(arg), result popped: stack unchanged
    return data[:at] + call + data[at:]


@given(mutated_pickles())
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_a_mutated_pickle_never_runs_code(tmp_path_factory, mutation):
    """Whatever is done to a pickled member, genaudit either loads the archive or refuses it with a
    GenauditError, and no code ever runs."""
    kind, change, where = mutation
    folder = tmp_path_factory.mktemp("fuzz")
    marker = folder / "PAYLOAD-RAN"
    data = mutate(INPUTS_PKL, kind, change, marker)
    path = (rewrite(PT2, folder / "m.pt2", {INPUTS: inputs_with(data)})
            if where == "example inputs" else rewrite(PT2, folder / "m.pt2", add={"x.pkl": data}))
    try:
        torch_formats._load_module(identify(path).path, "export")
        event(f"{kind}, {where}: loaded")
    except GenauditError:
        event(f"{kind}, {where}: refused")
    finally:
        torch_formats._forget_modules()
    assert not marker.exists(), mutation
    if kind.endswith("call"):
        with pytest.raises(GenauditError):
            identify(path)
