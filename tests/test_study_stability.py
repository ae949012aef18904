"""The bootstrap over training runs of zoo/study_stability.py: whole runs drawn with replacement, as many as there
are, each drawn run with all its checkpoints and its own name (so the rule's cross-validation keeps copies
together)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_stability  # noqa: E402


def _records() -> list[dict]:
    """Three runs of the noise zoo with 1, 2 and 3 checkpoints, and one of the sweep with the same name as one of
    them (runs are told apart by zoo and name)."""
    out = []
    for zoo, run, checkpoints in (("noise", "a", 1), ("noise", "b", 2), ("noise", "c", 3), ("sweep", "a", 2)):
        out += [{"zoo": zoo, "run": run, "epoch": e} for e in range(checkpoints)]
    return out


def test_resample_draws_whole_runs_with_replacement():
    records = _records()
    for seed in range(20):
        drawn = study_stability.resample(records, seed)
        assert all(any(r is s for s in records) for r in drawn)  # the same records, never altered copies
        per_run = Counter((r["zoo"], r["run"]) for r in drawn)
        sizes = Counter((r["zoo"], r["run"]) for r in records)
        # every drawn run comes whole (a multiple of its checkpoints), and as many runs are drawn as there are
        assert all(n % sizes[key] == 0 for key, n in per_run.items())
        assert sum(n // sizes[key] for key, n in per_run.items()) == len(sizes)
    assert study_stability.resample(records, 3) == study_stability.resample(records, 3)  # seeded


def test_resample_varies_with_the_seed():
    records = _records()
    draws = {tuple((r["zoo"], r["run"], r["epoch"]) for r in study_stability.resample(records, seed))
             for seed in range(20)}
    assert len(draws) > 1
