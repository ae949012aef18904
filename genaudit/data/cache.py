"""Integrity and locking for the named-data cache: a manifest of every data file, checks against it, a lock.

A data set's folder (e.g. `<root>/MNIST`) gets `.genaudit-manifest.json` recording the size and sha256 of each
file under it once torchvision has read it successfully. Later loads compare the files with the manifest, so
an interrupted download or a changed file is caught before it turns into wrong data. `lock` serializes runs
that share one cache root, so two processes never download into the same folder at once; `fetching` undoes the
empty folders of a download that failed.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genaudit.errors import GenauditError
from genaudit.files import write_atomic

MANIFEST = ".genaudit-manifest.json"
VERSION = 1


def _ours(name: str) -> bool:
    """genaudit's own bookkeeping files (the manifest, its temp files while written), not data."""
    return name.lstrip(".").startswith("genaudit-")


def data_files(folder: Path) -> list[str]:
    """Paths (relative, '/'-separated, sorted) of the data files under `folder`; symlinked folders are not entered."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        for name in files:
            if not _ours(name):
                found.append(Path(top, name).relative_to(folder).as_posix())
    return sorted(found)


def sha256(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest(folder: Path) -> dict:
    """What the folder holds now: {"version", "files": {relative path: {"size", "sha256"}}}."""
    files = {}
    for rel in data_files(folder):
        path = folder / rel
        files[rel] = {"size": path.stat().st_size, "sha256": sha256(path)}
    return {"version": VERSION, "files": files}


def write_manifest(folder: Path) -> dict:
    """Record the folder's files in its manifest (atomically: readers see the old manifest or the new one)."""
    record = manifest(folder)
    write_atomic(folder / MANIFEST, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when there is none (or it is unreadable, so cannot vouch for anything)."""
    try:
        record = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if record.get("version") != VERSION or not isinstance(files, dict):
        return None
    return record


def verify(folder: Path, record: dict | None = None) -> list[str]:
    """Files that no longer match the manifest, each as 'path (why)'; [] when all match or there is no manifest.

    Sizes are compared first (cheap: catches missing and truncated files), then the sha256 of the rest.
    Files that are not in the manifest are not judged here.
    """
    record = record if record is not None else read_manifest(folder)
    if record is None:
        return []
    bad, same_size = [], []
    for rel, want in sorted(record["files"].items()):
        path = folder / rel
        try:
            size = path.stat().st_size
        except OSError:
            bad.append(f"{rel} (missing)")
            continue
        if size != want.get("size"):
            change = "truncated" if isinstance(want.get("size"), int) and size < want["size"] else "size changed"
            bad.append(f"{rel} ({change}: {size} bytes, the manifest says {want.get('size')})")
        else:
            same_size.append(rel)
    for rel in same_size:
        if sha256(folder / rel) != record["files"][rel].get("sha256"):
            bad.append(f"{rel} (contents changed: sha256 differs from the manifest)")
    return bad


def clear(folder: Path) -> list[str]:
    """Delete everything under `folder` (files, then emptied sub-folders), never anything outside it.

    Symlinks are removed, not followed; a folder that is itself a symlink is refused, since clearing it would
    delete files elsewhere. The folder itself stays. Returns the removed files' relative paths.
    """
    if folder.is_symlink():
        raise GenauditError(
            f"{folder} is a symlink; genaudit will not delete files through it. Replace its contents with intact "
            "torchvision files by hand, or point --data-dir (or $GENAUDIT_DATA_DIR) at a folder of its own."
        )
    if not folder.is_dir():
        return []
    removed = []
    for top, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
            removed.append(Path(top, name).relative_to(folder).as_posix())
        for name in dirs:
            path = os.path.join(top, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                os.rmdir(path)
    return sorted(removed)


def _folders(folder: Path) -> set[Path]:
    """`folder` and every folder under it, when it is a real folder (symlinked folders are not entered)."""
    if folder.is_symlink() or not folder.is_dir():
        return set()
    found = {folder}
    for top, dirs, _ in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        found.update(Path(top, d) for d in dirs)
    return found


@contextmanager
def fetching(folder: Path) -> Iterator[None]:
    """Around a download into `folder`: when it raises, the folders it created there (`folder` itself included)
    and left empty are removed, deepest first, so a failed (offline) download leaves no empty cache folders.
    Folders that were there before, and any folder holding a file, stay."""
    before = _folders(folder)
    try:
        yield
    except BaseException:
        for path in sorted(_folders(folder) - before, key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir()  # only an empty folder goes
            except OSError:
                pass
        raise


@contextmanager
def lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (created if absent, never deleted) for the block; waits for other holders.

    Yields True when locked; False (no lock) where fcntl is missing or the lock file cannot be created, e.g. in
    a read-only shared cache, where nothing gets written anyway.
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
