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
