#!/usr/bin/env python
"""Agreement under augmentation as a term of the gap (the validity issue's item 3 names it): how much of its
training accuracy a model loses when each image is moved 2 pixels up, down, left or right (edge pixels repeated;
`genaudit.diagnostics.memorization.shifted`, the views `genaudit suspects` reads since 0.5.3). A model that
memorized fits its training images on narrow spikes, so small shifts cost it accuracy it would not lose on images
it generalizes to; a model that learned the classes keeps them.

    drop_shifts = accuracy on the audited images - mean over the four shifts of the accuracy on the shifted images

both with the labels the model was trained on, on a seeded stratified subsample of 500 of the 2,000 audited images
(four more passes of the model over 500 images: a bounded cost). Two forms were added to
zoo/study_estimate.py's candidates, fixed before their first run:

- S1: Z1 (the shipped form) plus drop_shifts;
- S2: S1 plus drop_shifts times the patch vote's consistency (Z1's pattern: each term's weight moved by how
  reliable the patch neighbours are).

Every split then chooses by the shipped rule (the sparsest form within 0.002 of the best grouped-CV MAE inside
its fitting data, least squares or least absolute deviations). Reported beside it, post hoc and not a candidate
for shipping: S1 imposed in every split.

    python zoo/study_shifts.py      # -> zoo/validity/shifts.md and .json (about 10 minutes the first time)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import study_estimate as S  # noqa: E402
from study_validity import CACHE, SAMPLES, SEED  # noqa: E402

TERM = "diagnostics.shifts.drop"
SHIFT_SAMPLES = 500
S1 = "S1: Z1 + the accuracy lost under 2-pixel shifts"
NEW = {S1: [*S.FORMS["Z1: X1 in the patch space"], "drop_shifts"],
       "S2: S1 + that loss weighted by the patch vote's reliability": [
           *S.FORMS["Z1: X1 in the patch space"], "drop_shifts", "drop_shifts_x_patch_reliability"]}
GROUPS = ("all", "realuse CIFAR-10", "realuse mnist (full data, clean labels)",
          "realuse fashion-mnist (full data, clean labels)", "sweep zoo", "noise zoo",
          "noise zoo (60-100% wrong labels)")


def drop(job: tuple[str, str]) -> dict:
    """One model's accuracy on SHIFT_SAMPLES of its audited images, as they are and shifted (with the labels it was
    trained on)."""
    from genaudit.data import arrange, load_data, stratified_indices
    from genaudit.diagnostics.memorization import SHIFTS, shifted
    from genaudit.models import cut_at
    from genaudit.pipeline import open_for

    model, npz = job
    ds = load_data(npz, samples=SAMPLES, seed=SEED)  # the samples the study audited
    labels = np.asarray(ds.y)
    pick = stratified_indices(len(labels), labels, SHIFT_SAMPLES, SEED)
    x, y = ds.preprocess(ds.x[pick]), labels[pick]
    _, graph, layout = open_for(model, ds)
    cut = cut_at(graph, None, threads=1)

    def accuracy(images: np.ndarray) -> float:
        return float(np.mean(np.argmax(cut.predict(arrange(np.ascontiguousarray(images), layout)), axis=1) == y))

    clean = accuracy(x)
    moved = float(np.mean([accuracy(shifted(x, dy, dx)) for dy, dx in SHIFTS]))
    return {"diagnostics.shifts.clean_accuracy": clean, "diagnostics.shifts.accuracy": moved, TERM: clean - moved}


def with_shifts(records: list[dict]) -> list[dict]:
    """Each record's shift drop as a scorecard value, cached in CACHE/shifts.json."""
    from multiprocessing import Pool

    store = CACHE / "shifts.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    todo = [r for r in records if r["name"] not in done]
    if todo:
        start = time.perf_counter()
        with Pool(2) as pool:
            for k, (r, found) in enumerate(zip(todo, pool.imap(drop, [(r["file"], r["npz"]) for r in todo],
                                                                   chunksize=4)), 1):
                done[r["name"]] = found
                if k % 100 == 0 or k == len(todo):
                    store.write_text(json.dumps(done))
                    print(f"{k} / {len(todo)} models, {time.perf_counter() - start:.0f} s", flush=True)
    for r in records:
        r["card"].update(done.get(r["name"], {}))
    return records


def add_terms() -> None:
    """The forms' terms that read the drop: alone, and times the patch vote's consistency."""
    S.PATHS["drop_shifts"] = [TERM]
    S.PATHS["drop_shifts_x_patch_reliability"] = ([TERM], [f"{S.PATCHES}.vote_consistency"])


def main() -> int:
    add_terms()
    return S.explore("shifts", "The accuracy lost under 2-pixel shifts as a term of the gap (exploration)", with_shifts,
                     NEW, S1, GROUPS, "the rule with the shift forms", tau=True)


if __name__ == "__main__":
    sys.exit(main())
