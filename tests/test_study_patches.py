"""The exploratory study zoo/study_patches.py adds forms to the validity study's candidates: every term they read
has its scorecard paths, in the patch space where the form says so, and nothing of the study's own forms moves."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_estimate  # noqa: E402
import study_patches  # noqa: E402


def test_patch_forms_read_the_patch_space_and_leave_the_study_forms_alone(monkeypatch):
    for name in ("FORMS", "PATHS", "DESCRIPTIONS"):
        monkeypatch.setattr(study_estimate, name, dict(getattr(study_estimate, name)))
    before = dict(study_estimate.FORMS)
    study_patches.add_forms()
    added = {f: t for f, t in study_estimate.FORMS.items() if f not in before}
    assert sorted(f.split(":")[0] for f in added) == ["XZ2", "Z1", "Z2", "Z3"]
    assert all(study_estimate.FORMS[f] == t for f, t in before.items())
    for form, terms in added.items():
        assert all(t in study_estimate.PATHS and t in study_estimate.DESCRIPTIONS for t in terms)
        paths = [p for t in terms for group in (study_estimate.PATHS[t] if isinstance(study_estimate.PATHS[t], tuple)
                                                 else (study_estimate.PATHS[t],)) for p in group]
        assert any(study_patches.BASE in p for p in paths)
        if form.startswith("Z"):  # the pixel vote is not read at all
            assert not any("neighbours.input" in p for p in paths)
