"""Files genaudit writes and where it keeps its caches: one atomic writer and one cache root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable

from genaudit.errors import GenauditError


def cache_root() -> Path:
    """The user cache folder for genaudit: $XDG_CACHE_HOME/genaudit, else ~/.cache/genaudit."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genaudit"


def model_cache_dir() -> Path:
    """Where converted models, analysed graphs and what audits compute from the samples alone (genaudit.derived) are
    cached: $GENAUDIT_CACHE, else the cache root."""
    return Path(os.environ["GENAUDIT_CACHE"]) if os.environ.get("GENAUDIT_CACHE") else cache_root()


MODEL_CACHE_BYTES = 4 << 30  # the model cache (converted models, analysed graphs, cuts) keeps at most 4 GiB


def prune(files: Iterable[Path], keep: int | None = None, max_bytes: int | None = None) -> None:
    """Delete the least recently used of `files` (by modification time: readers touch what they use) beyond the
    `keep` most recent, or once the more recent ones fill `max_bytes`; the most recent always stays. A file that
    vanished meanwhile (another process pruning) is skipped."""
    found = []
    for f in files:
        try:
            stat = f.stat()
        except OSError:
            continue
        found.append((stat.st_mtime, stat.st_size, f))
    found.sort(key=lambda entry: entry[0], reverse=True)
    total = 0
    for rank, (_, size, f) in enumerate(found):
        total += size
        if rank and ((keep is not None and rank >= keep) or (max_bytes is not None and total > max_bytes)):
            f.unlink(missing_ok=True)


def prune_model_cache(folder: Path) -> None:
    """Keep the model cache under `folder` (TorchScript conversions in onnx/; graphs, cuts and onnxruntime's
    optimized cuts in graphs/) within MODEL_CACHE_BYTES, the least recently used entries dropped first."""
    try:
        prune([*(folder / "onnx").glob("*.onnx"), *(folder / "graphs").glob("*.npz"),
               *(folder / "graphs").glob("*.json"), *(folder / "graphs").glob("*.onnx")], max_bytes=MODEL_CACHE_BYTES)
    except OSError:
        return


def used(path: Path) -> None:
    """Mark a cache entry as just used (its modification time), so pruning drops it last."""
    try:
        os.utime(path)
    except OSError:
        return


def data_cache_dir() -> Path:
    """Where named data sets are cached: $GENAUDIT_DATA_DIR, else <cache root>/data."""
    return Path(os.environ["GENAUDIT_DATA_DIR"]) if os.environ.get("GENAUDIT_DATA_DIR") else cache_root() / "data"


TEMPORARY = ".genaudit-"  # the prefix of the temporary file an atomic write renames into place


def _temporary(folder: Path) -> tuple[int, str]:
    """A new temporary file in `folder` (descriptor, path): a short fixed prefix and a random suffix, never derived
    from the target's name, so it fits wherever the target's name does."""
    return tempfile.mkstemp(dir=folder, prefix=TEMPORARY, suffix=".tmp")


def plain_mode(path: str | Path) -> None:
    """Give a file made by mkstemp (mode 0600) the mode a plain open() would give it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_atomic(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None]) -> None:
    """Write text, bytes, or what `content(file)` writes, so that readers see the old file or the whole new one,
    never a half-written one (nor a temporary file left behind). The new file gets the mode a plain open() would
    give it. A file system's refusal (no space, no permission, a name too long) is a user error naming the path."""
    path = Path(path)
    if not path.parent.exists():
        raise GenauditError(f"Cannot write {path}: folder {path.parent} does not exist. Create it or pick a path.")
    try:
        fd, tmp = _temporary(path.parent)
    except OSError as exc:
        raise GenauditError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        plain_mode(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise GenauditError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    finally:
        Path(tmp).unlink(missing_ok=True)  # after a failure or an interrupt (after the rename it is gone already)


EXAMPLES = {"--json": "scorecard.json", "--html": "report.html", "--csv": "suspects.csv"}  # file names to suggest


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system holding `folder` (or its nearest existing parent) takes."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no answer: the common limit
        return 255


def _problem(path: Path, option: str, inputs: tuple) -> str | None:
    """Why `path` cannot be written as `option`'s output (see check_writable), or None."""
    size, limit = len(os.fsencode(path.name)), _name_max(path.parent)
    if size > limit:
        return f"the file name is {size} bytes long, more than the {limit} this file system takes. Pick a shorter name"
    if path.is_dir():
        return f"it is a folder. Give a file name in it, e.g. {path / EXAMPLES.get(option, 'output')}"
    if any(path.resolve() == Path(str(i)).resolve() for i in inputs if i is not None and Path(str(i)).is_file()):
        return "it is one of this run's input files, which would be overwritten. Pick another path"
    parent = path.parent
    blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder, so nothing can be written under it. Pick another path"
    if not parent.exists():
        return f"folder {parent} does not exist. Create it or pick a path"
    try:
        fd, probe = _temporary(parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        return f"cannot create a file in {parent} ({reason}). Pick a writable place"
    return None


def check_writable(path: Path | None, option: str, inputs: tuple = ()) -> None:
    """Refuse an output path that cannot be written, before any work: a name longer than the file system takes, a
    folder, a path under a regular file, a missing folder, a place without write permission, or one of the run's
    input files (`inputs`: a model or data file it would overwrite)."""
    if path is None:
        return
    path = Path(path)
    try:
        problem = _problem(path, option, inputs)
    except OSError as exc:  # e.g. a path longer than the system takes, or a folder name too long
        problem = f"{exc.strerror or exc}. Pick another path"
    if problem:
        raise GenauditError(f"Cannot write {option} {path}: {problem}.")


def check_outputs(paths: dict[str, Path | None], inputs: tuple = ()) -> None:
    """Check a command's output paths (option -> path, None = not asked) before it does any work (see
    check_writable); no two may be the same file."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        check_writable(path, option, inputs)
        if path is not None:
            where = Path(path).resolve()
            if where in seen:
                raise GenauditError(f"Cannot write {seen[where]} and {option} to the same file {path}: give each "
                                    "its own path.")
            seen[where] = option
