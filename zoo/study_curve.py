#!/usr/bin/env python
"""The input vote carried to each model's training-set size, for the caches of `study_validity.py compute`
(computed before genaudit's scorecards held `diagnostics.neighbours.input.at_training_size`).

    python zoo/study_curve.py                 # -> zoo/validity/cache/curves.json, read by zoo/study_estimate.py
    python zoo/study_curve.py --zoos clutter  # add (or redo) one zoo's models, keeping every other entry

genaudit's own function (`vote_at_size`), on the same 2,000 seeded audited samples and the cached
predictions (no network reruns), so each value is what `genaudit score` reports for that model when pointed at its
whole training set. The training-set size is the run's (`train_size`: 60,000 for the full-data real-use runs, whose
cached audit file holds a 4,000-image subset of it), else the audited file's size. About 1 minute.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_validity import CACHE, SAMPLES, SEED, load_records  # noqa: E402

from genaudit.data import load_data  # noqa: E402
from genaudit.diagnostics.neighbours import (  # noqa: E402
    K,
    neighbour_vote,
    vote_at_size,
)

OUT = CACHE / "curves.json"
BASE = "diagnostics.neighbours.input"
KEYS = ("value", "reference_agreement", "value_by_part")  # what zoo/study_estimate.py reads


ZOOS = ("noise", "sweep", "realuse")  # the estimator's zoos: the default rewrites the store with these alone


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoos", default=",".join(ZOOS), help=f"comma-separated zoos (default {','.join(ZOOS)}: the "
                   "store rewritten with them alone; others: their entries added to the store)")
    zoos = tuple(p.parse_args(argv).zoos.split(","))
    data: dict[str, tuple[np.ndarray, np.ndarray, int, np.ndarray]] = {}
    out = {} if zoos == ZOOS or not OUT.exists() else json.loads(OUT.read_text())
    for r in load_records(zoos):
        if r["npz"] not in data:
            ds = load_data(r["npz"], samples=SAMPLES, seed=SEED)
            x = np.concatenate(list(ds.batches(512, "flat"))).astype(np.float64)
            y = np.asarray(ds.y)
            data[r["npz"]] = (x, y, ds.spec["source_size"], neighbour_vote(x, y, K))  # the vote reads labels only
        x, y, source, vote = data[r["npz"]]
        pred = np.load(CACHE / r["zoo"] / (Path(r["name"]).stem + ".npz"))["pred"].astype(np.int64)
        size = int((r.get("hp") or {}).get("train_size") or source)
        values = vote_at_size(x, y, pred, vote, size, K, seed=SEED, strata=y)
        out[f"{r['zoo']}/{r['name']}"] = {f"{BASE}.at_training_size.size": size,
                                          **{f"{BASE}.at_training_size.{k}": values[k] for k in KEYS}}
    OUT.write_text(json.dumps(out, indent=0))
    print(f"wrote {OUT} ({len(out)} models)")


if __name__ == "__main__":
    main()
