"""Files genaudit writes and where it keeps its caches: one atomic writer and one cache root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from genaudit.errors import GenauditError


def cache_root() -> Path:
    """The user cache folder for genaudit: $XDG_CACHE_HOME/genaudit, else ~/.cache/genaudit."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genaudit"


def model_cache_dir() -> Path:
    """Where converted models are cached: $GENAUDIT_CACHE, else the cache root."""
    return Path(os.environ["GENAUDIT_CACHE"]) if os.environ.get("GENAUDIT_CACHE") else cache_root()


def data_cache_dir() -> Path:
    """Where named data sets are cached: $GENAUDIT_DATA_DIR, else <cache root>/data."""
    return Path(os.environ["GENAUDIT_DATA_DIR"]) if os.environ.get("GENAUDIT_DATA_DIR") else cache_root() / "data"


def write_atomic(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None]) -> None:
    """Write text, bytes, or what `content(file)` writes, so that readers see the old file or the whole new one,
    never a half-written one. The new file gets the mode a plain open() would give it."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise GenauditError(f"Cannot write {path}: folder {path.parent} does not exist. Create it or pick a path.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path | None, option: str, inputs: tuple = ()) -> None:
    """Refuse an output path that cannot be written, before any work: a folder, a path under a regular file, a
    missing folder, a place without write permission, or one of the run's input files (`inputs`: a model or
    data file it would overwrite)."""
    if path is None:
        return
    path = Path(path)
    problem = None
    if path.is_dir():
        example = path / ("scorecard.json" if option == "--json" else "report.html")
        problem = f"it is a folder. Give a file name in it, e.g. {example}"
    elif any(path.resolve() == Path(str(i)).resolve() for i in inputs if i is not None and Path(str(i)).is_file()):
        problem = "it is one of this run's input files, which would be overwritten. Pick another path"
    else:
        parent = path.parent
        blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            problem = f"{blocking} is a file, not a folder, so nothing can be written under it. Pick another path"
        elif not parent.exists():
            problem = f"folder {parent} does not exist. Create it or pick a path"
        else:
            try:
                fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
                problem = f"cannot create a file in {parent} ({reason}). Pick a writable place"
    if problem:
        raise GenauditError(f"Cannot write {option} {path}: {problem}.")


def check_outputs(json_path: Path | None, html: Path | None, inputs: tuple = ()) -> None:
    """Check the --json/--html paths of a command before it does any work (see check_writable); they must differ."""
    check_writable(json_path, "--json", inputs)
    check_writable(html, "--html", inputs)
    if json_path is not None and html is not None and Path(json_path).resolve() == Path(html).resolve():
        raise GenauditError(f"Cannot write --json and --html to the same file {json_path}: give each its own path.")
