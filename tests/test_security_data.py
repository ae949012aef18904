"""Hostile and odd data on disk: image folders as they exist on real disks (damaged files, odd pixel modes, links
to devices, FIFOs, outside files and loops, decompression bombs, hostile names) and .npz archives (deflate
bombs, lying headers, pickled objects). Each is read, ignored, or refused with one message naming it (exit 2);
never a traceback, a hang, data counted twice, or memory beyond what the data holds. Every fixture is made here.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_MODELS, assert_user_error
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from genaudit.cli import app
from genaudit.data import Preprocess, folders, load_data, sources
from genaudit.data.folders import FORMATS, IMAGE_EXTENSIONS, load_folder
from genaudit.errors import GenauditError

runner = CliRunner()
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODEL = SAMPLE_MODELS / "mlp_clean.onnx"  # expects 1 x 28 x 28; folders give RGB, hence --channels 1


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@contextmanager
def bounded(seconds: int = 20):
    """Fail (instead of hanging the suite) when the block takes longer than `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the loader hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def image_bytes(mode: str = "L", size: tuple[int, int] = (28, 28), value=100, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, value).save(out, format=fmt)
    return out.getvalue()


def image_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    """c0, c1, ... each with `per_class` 28 x 28 grayscale PNGs of value 10 * class + i."""
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            (root / f"c{c}" / f"{i}.png").write_bytes(image_bytes(value=10 * c + i))
    return root


def claimed_png(width: int, height: int, whole: bool = False) -> bytes:
    """A grayscale PNG header that claims width x height pixels, then a few bytes of image data, or (`whole`) all
    of them: black, so that they deflate to a thousandth."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(height * (width + 1) if whole else 1000), 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


PEAK = """
import sys
from genaudit.data import load_data
from genaudit.errors import GenauditError
try:
    load_data(sys.argv[1])
    print("LOADED")
except GenauditError as exc:
    print("REFUSED", exc)
print("PEAK_KB", next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def load_in_subprocess(path: Path) -> tuple[str, float]:
    """(what load_data said, peak resident memory in MB) of a fresh process loading `path`."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "PEAK_KB" in done.stdout, done.stdout + done.stderr
    said, peak = done.stdout.rsplit("PEAK_KB", 1)
    return said.strip(), int(peak) / 1024


# ---- image folders: files --------------------------------------------------------------------------------------

def test_files_without_an_image_extension_are_ignored(tmp_path):
    root = image_folder(tmp_path / "d")
    (root / "c0" / "notes.txt").write_text("not an image")
    (root / "c0" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + os.urandom(64))
    (root / "c1" / "Thumbs.db").write_bytes(os.urandom(64))
    os.mkfifo(root / "c1" / "pipe")
    (root / "c1" / "zero").symlink_to("/dev/zero")
    (root / "README.png.txt").write_text("top-level files are not in any class")
    with bounded():
        data = load_data(str(root), samples=None)
    assert len(data) == 6 and data.y.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("name, content, reason", [
    ("0.png", lambda good: good[: len(good) // 2], "image file is truncated"),  # cut in the pixel data
    ("empty.png", lambda good: b"", "empty, cut off before its header"),
    ("0.png", lambda good: b"I am text, not a PNG", "another kind of file"),
    ("0.jpg", lambda good: os.urandom(500), "another kind of file"),
    # an EPS file under an image name: Pillow would run Ghostscript on it; only image decoders are tried
    ("0.png", lambda good: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n", "another kind of file"),
    ("._0.png", lambda good: b"\0\x05\x16\x07\0\x02\0\0Mac OS X        ", "macOS metadata"),
])
def test_an_image_file_that_cannot_be_decoded_is_refused_by_name(tmp_path, name, content, reason):
    root = image_folder(tmp_path / "d")
    noise = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)  # pixel data: most of the file
    good = io.BytesIO()
    Image.fromarray(noise).save(good, format="PNG")
    (root / "c0" / name).write_bytes(content(good.getvalue()))
    with pytest.raises(GenauditError) as caught:
        load_data(str(root), samples=None)
    message = str(caught.value)
    assert str(root / "c0" / name) in message and "cannot be read as an image" in message, message
    assert reason in message and "repair or delete the file" in message, message


@pytest.mark.parametrize("mode, value, expected", [
    ("I;16", 257 * 200, (200, 200, 200)),     # 16-bit: scaled to 8 bits (Pillow's RGB conversion gives 255)
    ("P", 7, (0, 0, 0)),                       # palette, as Pillow writes it
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, as torchvision
    ("LA", (90, 5), (90, 90, 90)),
    ("1", 1, (255, 255, 255)),
])
def test_images_in_odd_pixel_modes_become_rgb(tmp_path, mode, value, expected):
    root = image_folder(tmp_path / "d")
    Image.new(mode, (28, 28), value).save(root / "c1" / "odd.png")
    data = load_data(str(root), samples=None)
    assert data.x.shape == (7, 3, 28, 28) and data.x.dtype == np.uint8
    odd = data.x[data.ids.index(str(root / "c1" / "odd.png"))]
    assert (odd == np.array(expected, np.uint8)[:, None, None]).all(), odd[:, 0, 0]
    if mode != "I;16":  # the same pixels as torchvision's loader (Pillow's convert("RGB"))
        with Image.open(root / "c1" / "odd.png") as image:
            assert np.array_equal(odd.transpose(1, 2, 0), np.asarray(image.convert("RGB")))


def test_a_cmyk_jpeg_becomes_rgb(tmp_path):
    root = image_folder(tmp_path / "d")
    Image.new("CMYK", (28, 28), (0, 0, 0, 0)).save(root / "c1" / "print.jpg")
    data = load_data(str(root), samples=None)
    assert data.x[data.ids.index(str(root / "c1" / "print.jpg"))].min() >= 250  # no ink: white


@pytest.mark.parametrize("mode, value", [("F", 0.5), ("I", 70000)])
def test_pixels_of_unknown_range_are_refused(tmp_path, mode, value):
    root = image_folder(tmp_path / "d")
    Image.new(mode, (28, 28), value).save(root / "c0" / "science.tif")
    with pytest.raises(GenauditError, match=rf"science\.tif holds 32-bit.*mode '{mode}'"):
        load_data(str(root), samples=None)


def test_a_one_pixel_image_is_named_and_taken_with_resize(tmp_path):
    root = image_folder(tmp_path / "d")
    Image.new("L", (1, 1), 77).save(root / "c1" / "dot.png")
    with pytest.raises(GenauditError, match=r"dot\.png is 1×1.*0\.png is 28×28; pass --resize H,W"):
        load_data(str(root), samples=None)
    data = load_data(str(root), samples=None, preprocess=Preprocess(resize=(28, 28)))
    assert len(data) == 7 and (data.x[data.ids.index(str(root / "c1" / "dot.png"))] == 77).all()


@pytest.mark.parametrize("width, height", [(50_000, 50_000), (12_000, 12_000)])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, width, height):
    """Pillow itself raises above twice its limit; between once and twice it only warns, then decodes: both
    are refused before any pixel is decoded."""
    root = image_folder(tmp_path / "d")
    (root / "c0" / "bomb.png").write_bytes(claimed_png(width, height))
    start = time.perf_counter()
    with pytest.raises(GenauditError, match=r"bomb\.png was not decoded: .*pixels.*MAX_IMAGE_PIXELS"):
        load_data(str(root), samples=None)
    assert time.perf_counter() - start < 2


def test_a_decompression_bomb_costs_no_memory(tmp_path):
    """Before: Pillow warned, then decoded the 12000 x 12000 image of this 0.6 MB file (peak memory 1.6 GB)."""
    root = image_folder(tmp_path / "d")
    (root / "c0" / "0.png").write_bytes(claimed_png(12_000, 12_000, whole=True))
    said, peak = load_in_subprocess(root)
    assert said.startswith("REFUSED") and "0.png was not decoded" in said, said
    assert peak < 150, f"peak resident memory {peak:.0f} MB"


def test_the_pixel_limit_is_pillows_setting(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "d")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 28 x 28 = 784 > 2 x 300: over the limit
    with pytest.raises(GenauditError, match=r"0\.png was not decoded"):
        load_data(str(root), samples=None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the limit switched off, as Pillow's docs describe
    assert len(load_data(str(root), samples=None)) == 6


# ---- image folders: links, FIFOs, loops --------------------------------------------------------------------------

def test_links_inside_the_folder_are_read_as_files(tmp_path):
    root = image_folder(tmp_path / "d")
    (root / "c1" / "same-as-c0-1.png").symlink_to("../c0/1.png")
    (root / "c1" / "absolute.png").symlink_to(root / "c1" / "2.png")
    data = load_data(str(root), samples=None)
    assert len(data) == 8 and data.y.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert data.x[data.ids.index(str(root / "c1" / "same-as-c0-1.png")), 0, 0, 0] == 1


def test_the_listing_still_matches_torchvision_with_file_links_and_nesting(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = image_folder(tmp_path / "d")
    (root / "c0" / "sub" / "deeper").mkdir(parents=True)
    (root / "c0" / "sub" / "deeper" / "z.png").write_bytes(image_bytes())
    (root / "c0" / "sub" / "a.PNG").symlink_to("../../c1/0.png")
    images, labels = load_folder(root)
    expected = make_dataset(str(root), find_classes(str(root))[1], extensions=IMG_EXTENSIONS)
    assert [(f, int(c)) for f, c in zip(images.files, labels)] == expected


@pytest.mark.parametrize("make, phrase", [
    (lambda root, out: (root / "c0" / "zero.png").symlink_to("/dev/zero"),
     "is a link to /dev/zero, outside the data folder"),
    (lambda root, out: (root / "c0" / "r.jpg").symlink_to("/dev/urandom"),
     "is a link to /dev/urandom, outside the data folder"),
    (lambda root, out: (root / "c0" / "s.png").symlink_to(out / "secret.png"), "secret.png, outside the data folder"),
    (lambda root, out: (root / "c0" / "s.png").symlink_to("../../outside/secret.png"), "outside the data folder"),
    (lambda root, out: os.mkfifo(root / "c0" / "fifo.png"), "fifo.png has an image name but is a FIFO"),
    (lambda root, out: (os.mkfifo(root / "pipe"), (root / "c0" / "f.png").symlink_to("../pipe")),
     "f.png has an image name but is a FIFO"),
    (lambda root, out: (root / "c0" / "more").symlink_to(out), "c0/more is a link to a folder"),
    (lambda root, out: (root / "c9").symlink_to(out), "c9 is a link to a folder"),
    (lambda root, out: (root / "c9").symlink_to("c0"), "does not enter linked class folders"),
    (lambda root, out: (root / "c0" / "loop").symlink_to(".."), "c0/loop is a link to a folder (..)"),
    (lambda root, out: (root / "c0" / "sub").mkdir() or (root / "c0" / "sub" / "up").symlink_to("../.."),
     "sub/up is a link to a folder"),
    (lambda root, out: (root / "c0" / "self.png").symlink_to("self.png"), "self.png is a link that leads nowhere"),
    (lambda root, out: (root / "c0" / "gone.png").symlink_to("nowhere.png"), "gone.png is a link that leads nowhere"),
])
def test_hostile_links_and_special_files_are_refused_by_name(tmp_path, make, phrase):
    """Before: /dev/zero and /dev/urandom reached the decoder, a FIFO blocked the run forever, `loop -> ..` made 50
    images 2050, outside files were read, broken links were tracebacks. Now each is named, at once."""
    root, outside = image_folder(tmp_path / "d"), tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(image_bytes())
    make(root, outside)
    with bounded(), pytest.raises(GenauditError) as caught:
        load_data(str(root), samples=None)
    assert phrase in str(caught.value), str(caught.value)


def test_a_file_swapped_after_listing_is_checked_again_when_opened(tmp_path):
    root = image_folder(tmp_path / "d")
    images, _ = load_folder(root)
    (root / "c0" / "1.png").unlink()
    os.mkfifo(root / "c0" / "1.png")  # a FIFO in its place: opened non-blocking, refused by fstat
    with bounded(), pytest.raises(GenauditError, match=r"1\.png has an image name but is a FIFO"):
        images[np.array([1])]
    (root / "c0" / "2.png").unlink()
    (root / "c0" / "2.png").symlink_to(tmp_path / "elsewhere.png")
    (tmp_path / "elsewhere.png").write_bytes(image_bytes())
    with pytest.raises(GenauditError, match=r"2\.png is a link to .*elsewhere\.png, outside the data folder"):
        images[np.array([2])]


def test_a_fifo_that_slips_past_the_checks_is_opened_without_blocking(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "d")
    images, _ = load_folder(root)
    (root / "c1" / "0.png").unlink()
    os.mkfifo(root / "c1" / "0.png")
    monkeypatch.setattr(folders, "regular_inside", lambda path, real_root: path)  # as if swapped after the check
    with bounded(), pytest.raises(GenauditError, match=r"c1/0\.png has an image name but is a FIFO"):
        images[np.array([3])]


def test_a_folder_given_through_a_link_is_read(tmp_path):
    root = image_folder(tmp_path / "d")
    (tmp_path / "alias").symlink_to(root)
    assert len(load_data(str(tmp_path / "alias"), samples=None)) == 6


def test_a_deep_tree_is_walked_without_recursion(tmp_path):
    """Before: RecursionError below ~1000 nested folders (os.walk recurses)."""
    root = image_folder(tmp_path / "d")
    deep = os.open(root / "c0", os.O_RDONLY)
    try:
        for _ in range(1100):
            os.mkdir("d", dir_fd=deep)
            deeper = os.open("d", os.O_RDONLY, dir_fd=deep)
            os.close(deep)
            deep = deeper
        with open(os.open("x.png", os.O_WRONLY | os.O_CREAT, dir_fd=deep), "wb") as fh:
            fh.write(image_bytes(value=42))
    finally:
        os.close(deep)
    try:
        data = load_data(str(root), samples=None)
        assert len(data) == 7 and data.x[:, 0, 0, 0].tolist().count(42) == 1
    finally:
        subprocess.run(["rm", "-rf", str(root / "c0" / "d")], check=True)  # pytest's cleanup recurses too


def test_an_unreadable_folder_is_named(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "d")
    (root / "c1" / "locked").mkdir()
    scandir = os.scandir

    def denied(path):
        if str(path).endswith("locked"):  # as chmod 000 does for a user that is not root
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(GenauditError, match=r"c1/locked cannot be read \(Permission denied\)"):
        load_data(str(root), samples=None)


def test_hostile_file_names_are_read_or_shown_escaped(tmp_path):
    root = image_folder(tmp_path / "d")
    html = "<img src=x onerror=alert(1)>.png"
    (root / "c1" / html).write_bytes(image_bytes(value=55))
    (root / "c1" / "日本語 ü.png").write_bytes(image_bytes(value=56))
    data = load_data(str(root), samples=None)
    assert len(data) == 8 and str(root / "c1" / html) in data.ids
    (root / "c0" / "\x1b]0;pwned\x07x.png").write_text("damaged")  # a terminal escape in the name
    with pytest.raises(GenauditError) as caught:
        load_data(str(root), samples=None)
    assert "\x1b" not in str(caught.value) and "\\x1b]0;pwned\\x07x.png cannot be read" in str(caught.value)
    (root / "c0" / "\x1b]0;pwned\x07x.png").unlink()
    with open(os.path.join(os.fsencode(root / "c0"), b"\xff\xfe.png"), "wb") as fh:  # not UTF-8
        fh.write(b"damaged")
    with pytest.raises(GenauditError, match=r"\\udcff\\udcfe\.png cannot be read"):
        load_data(str(root), samples=None)


# ---- the command line --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, phrase", [
    (lambda root: (root / "c0" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated"),
     "c0/0.png cannot be read as an image"),
    (lambda root: (root / "c0" / "loop").symlink_to(".."), "c0/loop is a link to a folder"),
    (lambda root: os.mkfifo(root / "c1" / "pipe.png"), "c1/pipe.png has an image name but is a FIFO"),
    (lambda root: (root / "c1" / "z.png").symlink_to("/dev/zero"), "c1/z.png is a link to /dev/zero"),
    (lambda root: (root / "c1" / "bomb.png").write_bytes(claimed_png(50_000, 50_000)), "c1/bomb.png was not decoded"),
    (lambda root: (root / "c1" / "\x1b[2Jx.png").write_text("?"), "\\x1b[2Jx.png cannot be read as an image"),
])
def test_the_cli_names_the_file_and_exits_2_without_writing(tmp_path, make, phrase):
    root = image_folder(tmp_path / "d")
    make(root)
    out = tmp_path / "card.json"
    with bounded(60):
        result = run("score", MODEL, "--data", root, "--channels", "1", "--json", out)
    assert_user_error(result, phrase)
    assert "\x1b" not in result.output and not out.exists()


def test_the_cli_audits_a_folder_with_odd_files_it_ignores_or_converts(tmp_path):
    root = image_folder(tmp_path / "d", classes=10, per_class=2)
    (root / "c0" / ".DS_Store").write_bytes(os.urandom(32))
    (root / "c1" / "notes.txt").write_text("ignored")
    Image.new("I;16", (28, 28), 30000).save(root / "c2" / "deep.png")
    Image.new("P", (28, 28), 3).save(root / "c3" / "palette.png")
    result = run("score", MODEL, "--data", root, "--channels", "1", "--format", "json", "--samples", 100)
    assert result.exit_code == 0, result.output
    card = json.loads(result.output[result.output.index("{"):])
    assert card["samples"] == 22 and card["data"]["source_size"] == 22


# ---- .npz archives -----------------------------------------------------------------------------------------------

def npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def raw_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip written byte by byte, so its records can claim anything: (name, deflated stream, size it claims
    uncompressed, crc) per member."""
    body, directory = bytearray(), bytearray()
    for name, stream, size, crc in members:
        encoded, offset = name.encode(), len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream), size, len(encoded), 0)
        body += encoded + stream
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(stream), size,
                                 len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0)
    path.write_bytes(bytes(body + directory + end))


def deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def deflate_bomb(path: Path, gib: float = 2.1) -> int:
    """A valid .npz of about 2 MB whose x is `gib` GiB of zeros (every record honest); returns its size."""
    chunk = bytes(1 << 24)
    count = int(gib * 2**30) // len(chunk)
    header = npy_header((count * len(chunk),))
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = packer.compress(header + chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeat = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)  # after a full flush: the same bytes again
    crc = zlib.crc32(header + chunk)
    for _ in range(count - 1):
        crc = zlib.crc32(chunk, crc)
    stream = first + repeat * (count - 1) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    raw_zip(path, [("x.npy", stream, len(header) + count * len(chunk), crc)])
    return len(header) + count * len(chunk)


def test_a_deflate_bomb_is_refused_before_allocation(tmp_path):
    """Before: numpy inflated all 2.1 GiB (peak resident memory 2.2 GB, 17 s) before the shape was judged."""
    path = tmp_path / "bomb.npz"
    claimed = deflate_bomb(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("x.npy").file_size == claimed > 2 * 2**30 and path.stat().st_size < 3 * 2**20
    said, peak = load_in_subprocess(path)
    assert said.startswith("REFUSED") and "the array 'x' would expand from 2.1 MiB" in said, said
    assert "decompression bomb" in said and "numpy.savez instead of numpy.savez_compressed" in said, said
    assert peak < 200, f"peak resident memory {peak:.0f} MB"


def test_the_expansion_limit_spares_small_and_genuine_arrays(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    zeros, noise = np.zeros((64, 32, 32), np.uint8), rng.integers(0, 255, (64, 32, 32), dtype=np.uint8)
    np.savez_compressed(tmp_path / "zeros.npz", x=zeros)
    assert load_data(str(tmp_path / "zeros.npz")).x.shape == (64, 1, 32, 32)  # 1000x, but under the floor
    monkeypatch.setattr(sources, "NPZ_BOMB_FLOOR", 10_000)
    with pytest.raises(GenauditError, match=r"zeros\.npz: the array 'x' would expand .* likely decompression bomb"):
        load_data(str(tmp_path / "zeros.npz"))
    np.savez(tmp_path / "stored.npz", x=zeros)  # the fix the message gives: uncompressed
    np.savez_compressed(tmp_path / "noise.npz", x=noise)  # real data compresses little
    assert load_data(str(tmp_path / "stored.npz"), samples=None).x.sum() == 0
    assert np.array_equal(load_data(str(tmp_path / "noise.npz"), samples=None).x[:, 0], noise)


@pytest.mark.parametrize("header_shape, claimed, phrase", [
    ((10**12,), None, "declares shape (1000000000000,) of uint8 (931.3 GiB"),  # the header lies
    ((100,), 3 * 10**9, "is damaged: its header declares shape (100,)"),       # the zip records lie
    ((3 * 10**9,), "header", "would expand from"),                                # both lie, alike
])
def test_headers_that_claim_more_than_the_data_are_refused(tmp_path, header_shape, claimed, phrase):
    """Before: numpy allocated what the header said (931 GiB: 'Unable to allocate'), or read until EOF."""
    header = npy_header(header_shape)
    data = header + bytes(100)
    size = len(header) + header_shape[0] if claimed == "header" else claimed or len(data)
    raw_zip(tmp_path / "lie.npz", [("x.npy", deflated(data), size, zlib.crc32(data))])
    with pytest.raises(GenauditError, match=r"lie\.npz: the array 'x' ") as caught:
        load_data(str(tmp_path / "lie.npz"))
    assert phrase in str(caught.value)


def test_a_member_stored_past_the_end_of_the_file_is_refused(tmp_path):
    data = npy_header((4, 2)) + bytes(8)
    raw_zip(tmp_path / "cut.npz", [("x.npy", deflated(data), len(data), zlib.crc32(data))])
    whole = bytearray((tmp_path / "cut.npz").read_bytes())
    at = whole.index(b"PK\x01\x02") + 20  # the directory's compressed size: claim 1 GB
    whole[at : at + 4] = struct.pack("<I", 10**9)
    (tmp_path / "cut.npz").write_bytes(bytes(whole))
    with pytest.raises(GenauditError, match=r"the array 'x' is damaged: the archive records 953\.7 MiB stored for it"):
        load_data(str(tmp_path / "cut.npz"))


class Trap:
    """Unpickling this creates `marker`: what a hostile pickle would do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("key", ["x", "y"])
def test_a_pickled_object_array_is_refused_and_never_unpickled(tmp_path, key):
    marker = tmp_path / "unpickled"
    hostile = np.array([Trap(str(marker)), 1], dtype=object)
    arrays = {"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1])} | {key: hostile}
    with zipfile.ZipFile(tmp_path / "objects.npz", "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, array, allow_pickle=True)
    with pytest.raises(GenauditError) as caught:
        load_data(str(tmp_path / "objects.npz"))
    assert f"objects.npz: the array '{key}' holds Python objects" in str(caught.value)
    assert "never unpickles" in str(caught.value) and not marker.exists()


@pytest.mark.parametrize("content, phrase", [
    (b"just text", "could not be read as a .npz archive: File is not a zip file"),
    (b"\x93NUMPY\x01\x00" + struct.pack("<H", 60000) + b"{" * 60000, "Header info length (60000) is large"),
])
def test_a_file_that_is_no_npz_archive_gets_a_message_without_unsafe_advice(tmp_path, content, phrase):
    path = tmp_path / "d.npz"
    if content.startswith(b"\x93NUMPY"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", content)
    else:
        path.write_bytes(content)
    with pytest.raises(GenauditError) as caught:
        load_data(str(path))
    assert phrase in str(caught.value) and "allow_pickle" not in str(caught.value), str(caught.value)


def test_the_cli_refuses_an_npz_bomb_with_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "NPZ_BOMB_FLOOR", 10_000)
    np.savez_compressed(tmp_path / "flat.npz", x=np.zeros((200, 28, 28), np.uint8), y=np.arange(200) % 10)
    assert_user_error(run("score", MODEL, "--data", tmp_path / "flat.npz"), "flat.npz: the array 'x' would expand")


# ---- fuzzing -----------------------------------------------------------------------------------------------------

NAMES = st.one_of(st.sampled_from(["<img src=x onerror=alert(1)>", "日本語", "a b", "._x", "x.png", "-", "Ünï"]),
                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1,
                          max_size=12))
BENIGN = ["image", "image", "image", "link-inside", "other"]  # "other": a file with a name that is not an image's
HOSTILE = ["truncated", "random", "empty", "link-outside", "loop", "fifo", "broken"]
IMAGE_NAMES = [".png", ".jpg", ".JPEG", ".tif", ".txt"]  # contents decide the format; .txt is ignored
OTHER_NAMES = [".txt", "", ".DS_Store"]


@st.composite
def trees(draw, hostile: bool):
    """(classes, entries) of a folder tree, each entry (class, in a sub-folder?, name, kind, a number that picks
    its extension and contents); `hostile` adds damaged files, links out, loops, FIFOs and broken links."""
    classes = draw(st.integers(1, 3))

    def entries(kinds: list[str], **size):
        return st.lists(st.tuples(st.integers(0, classes - 1), st.booleans(), NAMES, st.sampled_from(kinds),
                                  st.integers(0, 2**16)), **size)

    drawn = draw(entries(BENIGN, max_size=8)) + (draw(entries(HOSTILE, min_size=1, max_size=3)) if hostile else [])
    return classes, draw(st.permutations(drawn))


def decodes(data: bytes) -> bool:
    """Whether Pillow's image decoders read the bytes as an image (the oracle for damaged files)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            image.convert("RGB")
        return True
    except Exception:
        return False


def build(root: Path, outside: Path, classes: int, entries) -> tuple[list[int], bool]:
    """Make the tree (each class starts with one good image); return the images each class should yield and
    whether loading must be refused."""
    counts, refuse, made = [1] * classes, False, []
    for c in range(classes):
        (root / f"c{c}" / "sub").mkdir(parents=True)
        (root / f"c{c}" / "base.png").write_bytes(image_bytes(size=(8, 8)))
        made.append((root / f"c{c}" / "base.png", True))
    for label, nested, stem, kind, seed in entries:
        rng = np.random.default_rng(seed)
        extension = (OTHER_NAMES if kind == "other" else IMAGE_NAMES)[seed // 7 % 5 % (3 if kind == "other" else 5)]
        path = root / f"c{label}" / ("sub" if nested else "") / f"{stem}{extension}"
        if os.path.lexists(path) or path.name in (".", ".."):
            continue
        image = path.name.lower().endswith(IMAGE_EXTENSIONS)
        good = image_bytes(["L", "RGB", "P"][seed % 3], [(8, 8), (1, 1), (3, 5)][seed % 3], int(rng.integers(256)),
                           "JPEG" if extension in (".jpg", ".JPEG") and seed % 3 != 2 else "PNG")
        if kind in ("image", "truncated", "random", "empty", "other"):
            data = {"image": good, "truncated": good[: int(len(good) * rng.uniform(0.1, 0.9))], "empty": b"",
                    "random": rng.bytes(int(rng.integers(1, 300))), "other": b"notes"}[kind]
            path.write_bytes(data)
            made.append((path, decodes(data)))
            bad = not made[-1][1]
        elif kind == "link-inside":
            target, valid = made[seed % len(made)]
            path.symlink_to(os.path.relpath(target, path.parent) if seed % 2 else target)
            made.append((path, valid))
            bad = not valid
        elif kind == "link-outside":
            path.symlink_to(outside)
            bad = True
        elif kind == "fifo":
            os.mkfifo(path)
            bad = True
        elif kind == "loop":
            path.symlink_to(".." if seed % 2 else ".")
            refuse, image = True, False
        else:  # broken
            path.symlink_to("missing.png")
            bad = True
        if image:
            counts[label] += 1
            refuse |= bad
    return counts, refuse


@pytest.mark.parametrize("hostile", [False, True])
@given(data=st.data())
@settings(max_examples=15, **FUZZ)
def test_fuzzed_image_folders_load_the_right_images_or_are_refused(tmp_path_factory, hostile, data):
    """Benign trees (images in any mode and size, unicode and HTML names, files that are no images, links inside)
    always load, with every image counted once; a tree with a hostile entry under an image name never does."""
    classes, entries = data.draw(trees(hostile))
    base = tmp_path_factory.mktemp("tree")
    (base / "outside.png").write_bytes(image_bytes())
    counts, refuse = build(base / "d", base / "outside.png", classes, entries)
    try:
        with bounded():
            loaded = load_data(str(base / "d"), samples=None, preprocess=Preprocess(resize=(8, 8)))
    except GenauditError as exc:
        assert refuse, f"refused a good folder: {exc}"
        event("refused")
        return
    event("loaded")
    assert not refuse, "loaded a folder with a damaged or hostile entry"
    assert np.bincount(loaded.y, minlength=classes).tolist() == counts
    assert loaded.x.shape == (sum(counts), 3, 8, 8)


@functools.cache
def good_npz(compressed: bool) -> bytes:
    out = io.BytesIO()
    x, y = np.arange(6 * 16, dtype=np.uint8).reshape(6, 4, 4), np.arange(6) % 3
    (np.savez_compressed if compressed else np.savez)(out, x=x, y=y)
    return out.getvalue()


@st.composite
def npz_mutations(draw):
    """A valid .npz (stored or deflated) with bytes flipped, a cut, a size record or the .npy shape rewritten."""
    data = bytearray(good_npz(draw(st.booleans())))
    kind = draw(st.sampled_from(["flip", "cut", "size", "shape"]))
    if kind == "flip":
        for offset, mask in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)),
                                          min_size=1, max_size=4)):
            data[offset] ^= mask
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "size":  # a local or directory record's uncompressed size
        records = [m.start() + offset for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24))
                   for m in re.finditer(signature, bytes(data))]
        at = draw(st.sampled_from(records))
        data[at : at + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 2**31, 2**32 - 1])))
    else:  # stored members show their .npy header in the file: claim another shape (the header keeps its length)
        start = bytes(data).find(b"{'descr'")
        if start >= 0:
            end = bytes(data).index(b"}", start) + 1
            shape = draw(st.sampled_from(["(9999999999, 4, 4)", "(600000, 4, 4)", "(0, 4, 4)", "(-6, 4, 4)", "(7,)"]))
            claim = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}".encode()
            data[start:end] = claim.ljust(end - start)
    return bytes(data)


@given(npz_mutations())
@settings(max_examples=25, **FUZZ)
def test_fuzzed_npz_archives_load_the_same_data_or_are_refused(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(data)
    try:
        loaded = load_data(str(path), samples=None)
    except GenauditError as exc:
        assert str(exc).strip()
        event("refused")
        return
    event("loaded")
    assert np.array_equal(loaded.x[:, 0], np.arange(6 * 16, dtype=np.uint8).reshape(6, 4, 4))  # never other data
    assert loaded.y.tolist() == [0, 1, 2, 0, 1, 2]

