"""The model cache of ONNX audits: a repeated audit of the same file reads its graph analysis and its cut from the
cache (no ONNX loading, no shape inference) and reports the same scorecard; a different file never reuses an entry;
a damaged or foreign entry is ignored and rebuilt; a cache that cannot be written only costs speed."""

from __future__ import annotations

import json
import os
import shutil
import zlib

import onnx
import pytest

import genaudit
import genaudit.models as models
import genaudit.models.cache as model_cache
from conftest import SAMPLE_MODELS
from genaudit.scorecard import to_json

OPTIONS = {"samples": 200, "layers": "all"}


def document(card) -> dict:
    return json.loads(to_json(card))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("GENAUDIT_CACHE", str(folder))
    return folder


@pytest.fixture
def loads(monkeypatch):
    """Counts the ONNX files opened and analysed (the work the cache saves) and the shape inferences run."""
    counts = {"load": 0, "infer": 0}
    real_load, real_infer = models._load_onnx, onnx.shape_inference.infer_shapes

    def load(*args, **kwargs):
        counts["load"] += 1
        return real_load(*args, **kwargs)

    def infer(*args, **kwargs):
        counts["infer"] += 1
        return real_infer(*args, **kwargs)

    monkeypatch.setattr(models, "_load_onnx", load)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", infer)
    return counts


def entries(cache) -> list:
    return sorted((cache / "graphs").iterdir())


def test_second_audit_uses_the_cache_and_reports_the_same(cache, monkeypatch):
    model = SAMPLE_MODELS / "cnn_clean.onnx"
    first = genaudit.audit(model, "sample", **OPTIONS)
    assert sorted(p.suffix for p in entries(cache)) == [".json", ".npz"]  # the graph and its cut

    def refuse(*args, **kwargs):
        raise AssertionError("the cached audit loaded, analysed or optimized the ONNX graph")

    monkeypatch.setattr(models, "_load_onnx", refuse)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    second = genaudit.audit(model, "sample", **OPTIONS)
    assert document(second) == document(first)
    # a file audited again: the cut's trunk and head are kept as onnxruntime optimized them, each with a stamp (its
    # key and CRC), and the next audit opens them without reading the cut's models
    assert sorted(p.suffix for p in entries(cache)) == [".json"] * 3 + [".npz"] + [".onnx"] * 2
    monkeypatch.setattr(model_cache, "_stored_model", refuse)
    assert document(genaudit.audit(model, "sample", **OPTIONS)) == document(first)


def test_cached_audit_equals_an_uncached_one(cache, tmp_path, monkeypatch):
    model = SAMPLE_MODELS / "mlp_clean.onnx"
    genaudit.audit(model, "sample", samples=200)
    cached = genaudit.audit(model, "sample", samples=200)
    monkeypatch.setenv("GENAUDIT_CACHE", str(tmp_path / "other"))
    fresh = genaudit.audit(model, "sample", samples=200)
    assert document(cached) == document(fresh)


def test_a_different_file_does_not_reuse_the_entry(cache, tmp_path, loads):
    path = tmp_path / "model.onnx"
    shutil.copy(SAMPLE_MODELS / "mlp_clean.onnx", path)
    genaudit.audit(path, "sample", samples=200)
    shutil.copy(SAMPLE_MODELS / "mlp_random.onnx", path)  # same path, other content: another sha256
    loads["load"] = 0
    replaced = genaudit.audit(path, "sample", samples=200)
    assert loads["load"] == 1
    assert replaced["model"]["sha256"] != genaudit.audit(SAMPLE_MODELS / "mlp_clean.onnx", "sample",
                                                         samples=200)["model"]["sha256"]
    reference = genaudit.audit(SAMPLE_MODELS / "mlp_random.onnx", "sample", samples=200)
    ours, theirs = document(replaced), document(reference)
    ours["model"].pop("path"), theirs["model"].pop("path")
    assert ours == theirs


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped byte", "foreign key"])
def test_a_damaged_entry_is_ignored_and_rebuilt(cache, loads, damage):
    model = SAMPLE_MODELS / "cnn_clean.onnx"
    first = genaudit.audit(model, "sample", samples=200)
    for path in entries(cache):
        data = bytearray(path.read_bytes())
        if damage == "garbage":
            data = bytearray(b"not a cache entry")
        elif damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "flipped byte" and path.suffix in (".npz", ".onnx"):
            data[len(data) // 2] ^= 0xFF  # inside a model: the zip member's CRC, or the recorded one, no longer matches
        elif damage == "flipped byte":
            continue  # a flipped byte in the JSON makes it garbage or another key: covered by the other cases
        elif path.suffix == ".json":  # valid, but another file's entry under this name
            entry = json.loads(data)
            entry["key"]["sha256"] = "0" * 64
            data = bytearray(json.dumps(entry).encode())
        else:
            continue
        path.write_bytes(bytes(data))
    loads["load"] = 0
    again = genaudit.audit(model, "sample", samples=200)
    assert loads["load"] == 1  # rebuilt from the model file
    assert document(again) == document(first)
    loads["load"] = 0
    assert document(genaudit.audit(model, "sample", samples=200)) == document(first)
    assert loads["load"] == 0  # the rebuilt entries are used


def test_optimized_parts_are_checked_and_made_per_cpu(cache, loads, monkeypatch):
    """A damaged optimized part is made again from the cut (not from the model file); another CPU or onnxruntime
    gets optimized parts of its own; the scorecard is the same every time."""
    model = SAMPLE_MODELS / "cnn_clean.onnx"
    first = document(genaudit.audit(model, "sample", samples=200))
    assert document(genaudit.audit(model, "sample", samples=200)) == first  # the second audit optimizes the parts
    optimized = [p for p in entries(cache) if p.suffix == ".onnx"]
    assert len(optimized) == 2
    for path in optimized:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    loads["load"] = 0
    assert document(genaudit.audit(model, "sample", samples=200)) == first
    assert loads["load"] == 0  # the cut's entry was whole
    for path in optimized:  # made again: whole, as its stamp (the .json of the same name) records
        stamp = json.loads(path.with_suffix(".json").read_text())
        assert zlib.crc32(path.read_bytes()) == stamp["crc32"]
    monkeypatch.setattr(model_cache, "_cpu", lambda: "another cpu")
    assert document(genaudit.audit(model, "sample", samples=200)) == first
    assert len([p for p in entries(cache) if p.suffix == ".onnx"]) == 4


def test_cache_that_cannot_be_written_costs_only_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GENAUDIT_CACHE", str(blocker / "cache"))
    model = SAMPLE_MODELS / "mlp_clean.onnx"
    card = genaudit.audit(model, "sample", samples=200)
    monkeypatch.setenv("GENAUDIT_CACHE", str(tmp_path / "cache"))
    assert document(card) == document(genaudit.audit(model, "sample", samples=200))


def test_another_layer_and_output_choice_are_their_own_entries(cache, loads):
    model = SAMPLE_MODELS / "cnn_clean.onnx"
    layers = [layer.name for layer in genaudit.models.open_model(genaudit.models.identify(model), None, None)
              .layers()]
    genaudit.audit(model, "sample", samples=200)
    loads["load"] = 0
    other = genaudit.audit(model, "sample", samples=200, layer=layers[0])
    assert loads["load"] == 1  # the graph entry is reused, the cut at another layer is built from the model
    assert other["layer"]["name"] == layers[0]
    loads["load"] = 0
    assert document(genaudit.audit(model, "sample", samples=200, layer=layers[0])) == document(other)
    assert loads["load"] == 0


def test_torchscript_audits_use_the_cache_too(cache, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from genaudit.models import torch_formats

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 10)).eval()
    path = tmp_path / "mlp.pt"
    torch.jit.script(module).save(str(path))
    first = genaudit.audit(path, "sample", samples=200)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached audit converted or analysed the model again")

    monkeypatch.setattr(torch_formats, "to_onnx", refuse)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    assert document(genaudit.audit(path, "sample", samples=200)) == document(first)


def test_prune_drops_the_least_recently_used_beyond_a_count_or_a_size(tmp_path):
    from genaudit.files import prune

    def make(sizes):
        files = []
        for age, size in enumerate(sizes):  # the first file is the most recent
            f = tmp_path / f"f{age}-{len(sizes)}.bin"
            f.write_bytes(b"x" * size)
            os.utime(f, (1_000_000 - age, 1_000_000 - age))
            files.append(f)
        return files

    files = make([10, 10, 10, 10])
    prune(files, keep=2)
    assert [f.exists() for f in files] == [True, True, False, False]
    files = make([10, 20, 5, 1])  # cumulative 10, 30, 35, 36: within 30 bytes the first two
    prune(files, max_bytes=30)
    assert [f.exists() for f in files] == [True, True, False, False]
    files = make([50, 1])  # the most recent stays even alone over the bound
    prune([*files, tmp_path / "gone.bin"], max_bytes=30)  # and a file that vanished is skipped
    assert [f.exists() for f in files] == [True, False]


def test_the_model_cache_keeps_the_most_recently_used_within_its_bound(cache, monkeypatch, loads):
    """With room for about one model's entries, auditing a second model drops the first's; auditing the first again
    rebuilds them (and gives the same scorecard); a hit counts as a use."""
    import genaudit.files as files

    first, second = SAMPLE_MODELS / "mlp_clean.onnx", SAMPLE_MODELS / "mlp_random.onnx"
    before = document(genaudit.audit(first, "sample", samples=200))
    size = sum(p.stat().st_size for p in entries(cache))
    (prefix,) = {p.name.split("-")[0] for p in entries(cache)}

    def first_cut_kept() -> bool:
        return any(p.suffix == ".npz" and p.name.startswith(prefix) for p in entries(cache))

    monkeypatch.setattr(files, "MODEL_CACHE_BYTES", int(size * 1.5))
    genaudit.audit(second, "sample", samples=200)
    assert sum(p.stat().st_size for p in entries(cache)) <= size * 1.5
    assert not first_cut_kept()  # the least recently used went first
    loads["load"] = 0
    assert document(genaudit.audit(first, "sample", samples=200)) == before
    assert loads["load"] == 1  # rebuilt
    monkeypatch.setattr(files, "MODEL_CACHE_BYTES", 10 * size)
    genaudit.audit(second, "sample", samples=200)  # both kept now; the second used last
    genaudit.audit(first, "sample", samples=200)  # a hit: the first becomes the most recently used
    monkeypatch.setattr(files, "MODEL_CACHE_BYTES", int(size * 1.5))
    files.prune_model_cache(cache)
    kept = entries(cache)
    assert any(p.name.startswith(prefix) and p.suffix == ".onnx" for p in kept)  # the first's newest entries stayed
    assert not any(not p.name.startswith(prefix) and p.suffix == ".npz" for p in kept)  # the second's cut went


def test_torchscript_conversions_count_in_the_bound(cache, monkeypatch):
    import genaudit.files as files

    (cache / "onnx").mkdir(parents=True)
    old, new = cache / "onnx" / "old.onnx", cache / "onnx" / "new.onnx"
    old.write_bytes(b"x" * 100)
    new.write_bytes(b"x" * 100)
    os.utime(old, (1_000_000, 1_000_000))
    (cache / "onnx" / "notes.txt").write_text("not an entry")  # other files are left alone
    monkeypatch.setattr(files, "MODEL_CACHE_BYTES", 150)
    files.prune_model_cache(cache)
    assert new.exists() and not old.exists() and (cache / "onnx" / "notes.txt").exists()
