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


@pytest.mark.parametrize("name", sorted(CASES))
def test_scorecard_unchanged(name):
    path = GOLDEN / f"{name}.json"
    document = _document(name)
    if os.environ.get("GENAUDIT_UPDATE_GOLDEN"):
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    assert document == json.loads(path.read_text(encoding="utf-8"))
