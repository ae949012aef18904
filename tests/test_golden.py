"""Golden scorecards: refactors must not change what an audit reports.

The JSON documents in tests/golden/ were written by this file from the shipped sample models and data. A change
that alters them on purpose (a new diagnostic, a fixed bug) regenerates them with
`GENAUDIT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and the diff is reviewed in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import genaudit
from conftest import REPO, SAMPLE_MODELS
from genaudit.scorecard import to_json

GOLDEN = Path(__file__).resolve().parent / "golden"

CASES = {  # name -> (function, positional arguments, keyword options)
    "score_mlp_clean_labels": ("audit", [SAMPLE_MODELS / "mlp_clean.onnx", "sample"], {"samples": 300}),
    "score_mlp_random_no_labels": ("audit", [SAMPLE_MODELS / "mlp_random.onnx", "sample"],
                                   {"samples": 300, "labels": False, "seed": 3}),
    "score_cnn_layers_probes": ("audit", [SAMPLE_MODELS / "cnn_clean.onnx", "sample"],
                                {"samples": 200, "layers": "all", "probes": 64}),
    "compare_clean_random": ("compare", [[SAMPLE_MODELS / "mlp_clean.onnx", SAMPLE_MODELS / "mlp_random.onnx"],
                                         "sample"], {"samples": 200, "order": "given"}),
}


def _document(name: str) -> dict:
    function, args, options = CASES[name]
    result = getattr(genaudit, function)(*args, **options)
    text = json.dumps(json.loads(to_json(result)), indent=1)
    document = json.loads(text.replace(str(REPO), "<repo>"))
    document.pop("genaudit_version", None)
    for card in document.get("scorecards", []):
        card.pop("genaudit_version", None)
    return document


def differences(got, want, where: str = "") -> list[str]:
    """Where two documents differ: keys, strings, integers and lists exactly; floats to 1e-6 relative (the last
    printed digit moves with the CPU's vector width: onnxruntime's and BLAS's kernels sum float32 in a different
    order on AVX-512 than on AVX2)."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return [f"{where or '.'}: keys {sorted(set(got) ^ set(want))} differ"]
        return [d for k in want for d in differences(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, expected {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if got == pytest.approx(want, rel=1e-6, abs=2e-6) else [f"{where}: {got} != {want}"]
    return [] if got == want and type(got) is type(want) else [f"{where}: {got!r} != {want!r}"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_scorecard_unchanged(name):
    path = GOLDEN / f"{name}.json"
    document = _document(name)
    if os.environ.get("GENAUDIT_UPDATE_GOLDEN"):
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    assert differences(document, json.loads(path.read_text(encoding="utf-8"))) == []


def test_differences_sees_every_kind_of_change():
    doc = {"a": 1, "b": [0.5, "x"], "c": {"d": 0.25}, "e": True}
    assert differences(doc, doc) == []
    assert differences({**doc, "c": {"d": 0.2500001}}, doc) == []  # the last printed digit
    assert differences({**doc, "c": {"d": 0.2501}}, doc) == [".c.d: 0.2501 != 0.25"]
    assert differences({**doc, "a": 2}, doc) == [".a: 2 != 1"]
    assert differences({**doc, "e": 1}, doc) == [".e: 1 != True"]
    assert differences({**doc, "b": [0.5]}, doc) == [".b: 1 items, expected 2"]
    assert differences({**doc, "f": 0}, doc) == [".: keys ['f'] differ"]
