"""Arrays computed from the audited samples alone (no model), kept on disk so a later audit of the same samples
reads them instead of computing them again: the patch space, and the neighbour searches (the learning curve's
included) in the input and patch spaces. Entries live in `$GENAUDIT_CACHE/<kind>` as `.npz` files named by a digest of everything
they depend on; they are loaded without pickle, checked by the caller, written whole or not at all, and the least
recently used are dropped beyond a bound. A cache that cannot be read or written only costs the time.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from genaudit.errors import GenauditError
from genaudit.files import model_cache_dir, prune, used, write_atomic

Arrays = dict[str, np.ndarray]

# np.load parses each array's header with ast.literal_eval, and CPython 3.11's AST constructor is not safe in two
# threads at once: the neighbour searches load their entries side by side, and one CI run failed with "SystemError:
# AST constructor recursion depth mismatch" (cpython gh-106905). So entries are read one at a time.
_READING = threading.Lock()


def digest(*parts: bytes | str | int | float | tuple | None) -> str:
    """A short hex digest of `parts` (bytes as they are, anything else by its repr)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def load(path: Path, check: Callable[[Arrays], bool]) -> Arrays | None:
    """The arrays stored at `path` if they load (no pickle) and pass `check`, else None; a hit counts as a use."""
    try:
        with _READING, np.load(path, allow_pickle=False) as entry:
            arrays = {name: entry[name] for name in entry.files}
    except (OSError, ValueError, KeyError):
        return None
    try:
        if not check(arrays):
            return None
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    used(path)
    return arrays


def store(path: Path, arrays: Arrays, keep: int) -> None:
    """Write `arrays` to `path` (whole or not at all), then drop all but the `keep` most recently used entries of
    its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda fh: np.savez(fh, **arrays))
        prune(path.parent.glob("*.npz"), keep=keep)
    except (OSError, GenauditError):
        return


def folder(kind: str) -> Path:
    """Where entries of `kind` are kept: $GENAUDIT_CACHE/<kind> (the cache root by default)."""
    return model_cache_dir() / kind


__all__ = ["Arrays", "digest", "folder", "load", "store"]
