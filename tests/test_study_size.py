"""The explored size term (zoo/study_size.py): 1/sqrt(N) of the training set's size the audit read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_size  # noqa: E402


def test_the_size_term_hand_case():
    records = [{"card": {study_size.SIZE: 10000}}, {"card": {study_size.SIZE: 60000}}, {"card": {}}]
    terms = [r["card"][study_size.TERM] for r in study_size.with_size(records)]
    assert terms[0] == pytest.approx(0.01) and terms[1] == pytest.approx(60000 ** -0.5) and terms[2] is None


def test_z1n_is_z1_plus_the_size_term():
    assert study_size.NEW[study_size.Z1N] == [*study_size.S.FORMS["Z1: X1 in the patch space"], study_size.TERM]
