"""The scorecard: one versioned JSON document with everything needed to reproduce and read an audit."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from genaudit.errors import GenauditError

SCHEMA_VERSION = "1.0"
DIGITS = 6  # values are rounded so that the same inputs give byte-identical scorecards


def _clean(value: Any) -> Any:
    """Round floats, turn NaN into None, and make numpy scalars plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, DIGITS)
    return value


def to_json(card: dict) -> str:
    return json.dumps(_clean(card), indent=2, sort_keys=False) + "\n"


def write_atomic(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the whole new one, never a half-written one."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise GenauditError(f"Cannot write {path}: folder {path.parent} does not exist. Create it or pick a path.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lookup(card: dict, metric: str) -> float | None:
    """A metric by dotted path, e.g. 'ablation.auc', 'diagnostics.noise.auc' or 'clean_accuracy'."""
    for root in (card, card.get("diagnostics", {})):
        node: Any = root
        for part in metric.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return float(node)
    return None


def load(path: str | Path) -> dict:
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GenauditError(f"Cannot read scorecard {path}: {exc}.") from None
    if not isinstance(card, dict) or "schema_version" not in card:
        raise GenauditError(f"{path} is not a genaudit scorecard (no schema_version).")
    return card


class Scorecard(dict):
    """The audit result: a plain dict (the JSON document) with helpers. `timings` are kept out of the JSON so
    that the same inputs give the same document; `unit_values` (N x units) serve representation similarity."""

    timings: dict
    unit_values: Any = None  # np.ndarray | None

    def to_json(self) -> str:
        return to_json(self)

    def write(self, path: str | Path) -> None:
        write_atomic(path, self.to_json())
