"""The named-data cache: manifests, detection and re-fetch of damaged files, the lock between runs. No network:
torchvision's `download` is replaced by a fake that writes a tiny MNIST in torchvision layout."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd

from conftest import write_mnist
from genaudit.data import cache
from genaudit.data.sources import load_named
from genaudit.errors import GenauditError

FILES = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
# what the manifest lists after a first read of the train split: the raw files and the decoded arrays
LISTED = ["genaudit-arrays/train-x.npy", "genaudit-arrays/train-y.npy", *[f"raw/{f}" for f in FILES]]


def _tiny_mnist(seed=0, n=30):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 28, 28)), np.arange(n) % 10


def _write_mnist(raw, seed=0):
    """MNIST's four raw files in torchvision layout (`<root>/MNIST/raw/...`), 30 images each."""
    write_mnist(raw, *_tiny_mnist(seed))


@pytest.fixture
def online(monkeypatch):
    """Online, with MNIST.download replaced by a fake writing good files; returns the list of its calls."""
    calls = []

    def fake_download(self):
        calls.append(self.raw_folder)
        if not self._check_exists():  # like torchvision's: files that are there are not fetched again
            _write_mnist(Path(self.raw_folder))

    monkeypatch.delenv("GENAUDIT_OFFLINE", raising=False)
    monkeypatch.setattr(tvd.MNIST, "download", fake_download)
    return calls


def _manifest(folder):
    return json.loads((folder / cache.MANIFEST).read_text())


def test_first_read_writes_a_manifest_and_later_reads_verify_it(tmp_path, monkeypatch):
    _write_mnist(tmp_path / "MNIST" / "raw")
    x, y = load_named("mnist", "train", tmp_path)
    images, labels = _tiny_mnist()
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x[:, 0], images) and np.array_equal(y, labels)
    files = _manifest(tmp_path / "MNIST")["files"]
    assert sorted(files) == LISTED
    for rel, entry in files.items():
        data = (tmp_path / "MNIST" / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    hashed = []
    real = cache.sha256
    monkeypatch.setattr(cache, "sha256", lambda path: hashed.append(path.name) or real(path))
    monkeypatch.setattr(tvd, "MNIST", None)  # the second read needs no torchvision: it maps the decoded arrays
    x2, y2 = load_named("mnist", "train", tmp_path)
    assert sorted(hashed) == sorted(Path(rel).name for rel in LISTED)  # every file checked against the manifest
    assert isinstance(x2, np.memmap) and np.array_equal(x2, x) and np.array_equal(y2, y)


def test_damaged_decoded_arrays_are_caught_too(tmp_path, online):
    _write_mnist(tmp_path / "MNIST" / "raw")
    load_named("mnist", "train", tmp_path)
    _alter(tmp_path / "MNIST" / "genaudit-arrays" / "train-x.npy")
    x, _ = load_named("mnist", "train", tmp_path)  # caught, cleared, fetched again, decoded again
    assert len(online) == 1 and np.array_equal(x[:, 0], _tiny_mnist()[0])
    assert cache.verify(tmp_path / "MNIST") == []


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _alter(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different contents: only the sha256 can tell
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, why", [(_truncate, "truncated"), (_alter, "contents changed")])
def test_a_damaged_file_offline_is_named_and_left_alone(tmp_path, damage, why):
    _write_mnist(tmp_path / "MNIST" / "raw")
    load_named("mnist", "train", tmp_path)
    target = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    damage(target)
    before = target.read_bytes()
    with pytest.raises(GenauditError, match=rf"'mnist'.*train-images-idx3-ubyte \({why}.*--data-dir") as err:
        load_named("mnist", "train", tmp_path)
    assert "train-labels" not in str(err.value)  # only the damaged file is named
    assert "\n" not in str(err.value)
    assert target.read_bytes() == before


@pytest.mark.parametrize("damage", [_truncate, _alter, lambda path: path.unlink()])
def test_a_damaged_file_online_is_fetched_again_and_the_manifest_rewritten(tmp_path, online, damage):
    _write_mnist(tmp_path / "MNIST" / "raw", seed=1)  # what was there first differs from what the fake fetches
    load_named("mnist", "train", tmp_path)
    old = _manifest(tmp_path / "MNIST")
    damage(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    (tmp_path / "keep.txt").write_text("outside the data set's folder")
    x, y = load_named("mnist", "train", tmp_path)
    images, labels = _tiny_mnist(seed=0)
    assert len(online) == 1
    assert np.array_equal(x[:, 0], images) and np.array_equal(y, labels)
    new = _manifest(tmp_path / "MNIST")
    assert new == cache.manifest(tmp_path / "MNIST") and new != old
    assert cache.verify(tmp_path / "MNIST") == []
    assert (tmp_path / "keep.txt").exists()


def test_a_file_torchvision_cannot_read_counts_as_damaged(tmp_path, online, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    _write_mnist(raw)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00garbage, not an idx file" * 10)
    monkeypatch.setenv("GENAUDIT_OFFLINE", "1")
    with pytest.raises(GenauditError, match=r"'mnist'.*train-images-idx3-ubyte.*torchvision could not read these"):
        load_named("mnist", "train", tmp_path)
    assert not (tmp_path / "MNIST" / cache.MANIFEST).exists()  # nothing vouches for unreadable files
    monkeypatch.delenv("GENAUDIT_OFFLINE")
    x, _ = load_named("mnist", "train", tmp_path)
    assert len(online) == 1 and np.array_equal(x[:, 0], _tiny_mnist()[0])
    assert sorted(_manifest(tmp_path / "MNIST")["files"]) == LISTED


def test_a_failed_refetch_names_the_damaged_files(tmp_path, monkeypatch):
    _write_mnist(tmp_path / "MNIST" / "raw")
    load_named("mnist", "train", tmp_path)
    _truncate(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    monkeypatch.delenv("GENAUDIT_OFFLINE")

    def no_network(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvd.MNIST, "download", no_network)
    with pytest.raises(GenauditError, match=r"'mnist'.*t10k-images-idx3-ubyte.*could not download"):
        load_named("mnist", "test", tmp_path)


def test_a_missing_set_keeps_the_not_in_the_cache_message(tmp_path):
    with pytest.raises(GenauditError, match=r"'mnist'.*not in the cache.*--data-dir"):
        load_named("mnist", "train", tmp_path)


def test_new_files_are_added_to_the_manifest(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw")
    load_named("mnist", "train", tmp_path)
    (tmp_path / "MNIST" / "raw" / "extra.gz").write_bytes(b"another split's archive")
    load_named("mnist", "test", tmp_path)
    assert "raw/extra.gz" in _manifest(tmp_path / "MNIST")["files"]


def test_a_read_only_cache_still_loads(tmp_path, monkeypatch):
    _write_mnist(tmp_path / "MNIST" / "raw")

    def read_only(folder):
        raise PermissionError(13, "Read-only file system", str(folder))

    monkeypatch.setattr(cache, "write_manifest", read_only)
    x, _ = load_named("mnist", "train", tmp_path)
    assert x.shape == (30, 1, 28, 28) and not (tmp_path / "MNIST" / cache.MANIFEST).exists()


def test_clear_stays_inside_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    folder = tmp_path / "data" / "MNIST"
    _write_mnist(folder / "raw")
    (folder / "linked-dir").symlink_to(outside)
    (folder / "raw" / "linked-file").symlink_to(outside / "precious")
    removed = cache.clear(folder)
    assert "raw/train-images-idx3-ubyte" in removed and "raw/linked-file" in removed
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert (outside / "precious").read_text() == "keep"
    (tmp_path / "data" / "FashionMNIST").symlink_to(outside)
    with pytest.raises(GenauditError, match="symlink"):
        cache.clear(tmp_path / "data" / "FashionMNIST")
    assert (outside / "precious").exists()


def test_the_lock_excludes_other_holders(tmp_path):
    path = tmp_path / "root" / ".genaudit-mnist.lock"
    with cache.lock(path) as locked:
        assert locked
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again once the block is left
    finally:
        os.close(fd)


def test_concurrent_loads_download_once(tmp_path, monkeypatch):
    monkeypatch.delenv("GENAUDIT_OFFLINE")
    active, calls, peak = [0], [], [0]
    guard = threading.Lock()

    def slow_download(self):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            calls.append(self.raw_folder)
        time.sleep(0.3)
        _write_mnist(Path(self.raw_folder))
        with guard:
            active[0] -= 1

    monkeypatch.setattr(tvd.MNIST, "download", slow_download)
    start = threading.Barrier(2)
    results, errors = [None, None], []

    def run(i):
        start.wait()
        try:
            results[i] = load_named("mnist", "train", tmp_path)
        except Exception as exc:  # surfaced below; a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(calls) == 1 and peak[0] == 1
    images = _tiny_mnist()[0]
    for x, _ in results:
        assert np.array_equal(x[:, 0], images)


def test_a_failed_download_leaves_no_empty_folders_it_made(tmp_path, monkeypatch):
    """torchvision's own MNIST download, its network replaced by one that fails: it makes MNIST/raw, then raises;
    `fetching` removes the folders it made and left empty, and lets the error through."""
    import torchvision.datasets.mnist as tv_mnist
    from urllib.error import URLError

    def offline(url, **_):
        raise URLError(f"no network for {url}")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match="Error downloading"):
        with cache.fetching(tmp_path / "MNIST"):
            tvd.MNIST(str(tmp_path), download=True)
    assert list(tmp_path.iterdir()) == []
    with cache.fetching(tmp_path / "MNIST"):  # a download that succeeds keeps what it made
        (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    assert (tmp_path / "MNIST" / "raw").is_dir()


def test_a_failed_download_keeps_the_folders_that_were_there_and_any_file(tmp_path):
    folder = tmp_path / "MNIST"
    (folder / "kept").mkdir(parents=True)  # there before, empty: stays

    def download():
        (folder / "raw" / "nested").mkdir(parents=True)
        (folder / "partial").mkdir()
        (folder / "partial" / "train.gz").write_bytes(b"half an archive")  # judged by the checks, not here
        (folder / "kept" / "new").mkdir()
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        with cache.fetching(folder):
            download()
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["kept", "partial",
                                                                                  "partial/train.gz"]


def test_a_load_whose_download_fails_leaves_no_empty_folders(tmp_path, monkeypatch):
    """Online but the download fails (torchvision's MNIST download with its network replaced): the load names
    the missing set, and the cache root holds only its lock file, no empty MNIST/raw."""
    import torchvision.datasets.mnist as tv_mnist
    from urllib.error import URLError

    from genaudit.data.sources import load_named

    def offline(url, **_):
        raise URLError(f"no network for {url}")

    monkeypatch.delenv("GENAUDIT_OFFLINE", raising=False)
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(GenauditError, match=r"'mnist'.*not in the cache"):
        load_named("mnist", "train", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".genaudit-mnist.lock"]
