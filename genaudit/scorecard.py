"""The scorecard: one versioned JSON document with everything needed to reproduce and read an audit."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from genaudit.errors import GenauditError
from genaudit.files import write_atomic

SCHEMA_VERSION = "2.7"  # docs/schema.md: what each version changed
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
