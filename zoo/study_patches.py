#!/usr/bin/env python
"""Explored, not shipped: would the estimator gain from the neighbour vote in the patch-feature space of
zoo/study_spaces.py (built from the audited training images alone), carried to the training set's size like the
pixel vote? Evaluated exactly like estimator v4.2 (zoo/study_estimate.py: the same splits, rule, losses and
calibration), with forms that read the patch vote added to the candidates.

    python zoo/study_patches.py      # -> zoo/validity/patches.md and .json (about 10 minutes; the patch votes
                                     #    are cached in zoo/validity/cache/patches.json)

For each of the study's 30 training sets, the 2,000 images each model was audited on (`genaudit.data.load_data`,
seed 0, as the study's audits) get their patch features and 20 nearest neighbours once; each of the 1,675 models'
predictions on them (cached by `zoo/study_validity.py compute`) are then voted with the labels it was trained on:
the agreement, the labels' agreement, two disjoint votes' consistency, and the vote's learning curve among n/8, n/4
and n/2 voters carried to the model's training-set size (`genaudit.diagnostics.neighbours.vote_at_size`).
These go under `diagnostics.neighbours.patches` in each record, as the audit would write them.

The forms added, fixed before the first evaluation: Z1-Z3 are X1-X3 with every pixel-vote term (the vote at the
training set's size, its consistency, label noise, and the reliability the other terms are weighted by) read in
the patch space instead; XZ2 is X2 plus the patch vote at the training set's size and its consistency.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_estimate as S  # noqa: E402
from study_spaces import patch_features  # noqa: E402
from study_validity import CACHE, OUT, SAMPLES, SEED  # noqa: E402

from genaudit.data import load_data  # noqa: E402
from genaudit.diagnostics.neighbours import (  # noqa: E402
    K,
    nearest_neighbours,
    neighbour_agreement,
    vote_at_size,
    vote_of,
)

BASE = "diagnostics.neighbours.patches"
STORE = CACHE / "patches.json"


def patch_votes(records: list[dict]) -> dict[str, dict]:
    """{record name: the patch vote's values, as the audit would write them under BASE}, cached in STORE."""
    done = json.loads(STORE.read_text()) if STORE.exists() else {}
    todo = [r for r in records if r["name"] not in done]
    for npz in sorted({r["npz"] for r in todo}):
        start = time.perf_counter()
        ds = load_data(npz, samples=SAMPLES, seed=SEED)  # the samples the study audited
        labels = np.asarray(ds.y)
        x = patch_features(ds.x.astype(np.float32) / 255)
        idx, dist = nearest_neighbours(x, 2 * K)
        vote = vote_of(idx[:, :K], dist[:, :K], labels)  # the labels' vote: the same for every model
        group = [r for r in todo if r["npz"] == npz]
        for r in group:
            pred = np.load(CACHE / r["zoo"] / f"{Path(r['name']).stem}.npz")["pred"].astype(np.int64)
            found = neighbour_agreement(None, labels, pred, K, neighbours=(idx, dist))
            size = int(r["card"]["diagnostics.neighbours.input.at_training_size.size"])
            at = vote_at_size(x, labels, pred, vote, size, K, seed=SEED, strata=labels)
            done[r["name"]] = {f"{BASE}.value": found["value"],
                               f"{BASE}.reference_agreement": found["reference_agreement"],
                               f"{BASE}.vote_consistency": found["vote_consistency"],
                               f"{BASE}.at_training_size.value": at["value"],
                               f"{BASE}.at_training_size.value_by_part": at["value_by_part"]}
        STORE.write_text(json.dumps(done))
        print(f"{Path(npz).name}: {len(group)} models, {time.perf_counter() - start:.1f} s", flush=True)
    return done


def add_forms() -> None:
    """The patch-vote terms and the Z / XZ forms (module docstring), beside the study's own."""
    rel = [f"{BASE}.vote_consistency"]
    S.PATHS.update({
        "above_patches_at_size": ["clean_accuracy", f"-{BASE}.at_training_size.value"],
        "consistency_patches": rel,
        "noise_patches": [f"{BASE}.vote_consistency", f"-{BASE}.reference_agreement"],
        "above_patches_at_size_x_prel": (["clean_accuracy", f"-{BASE}.at_training_size.value"], rel),
        "above_feat_x_prel": (["clean_accuracy", "-diagnostics.neighbours.features.value"], rel),
        "above_early_x_prel": (["clean_accuracy", "-diagnostics.neighbours.early.value"], rel),
    })
    S.DESCRIPTIONS.update({name: name for name in S.PATHS if name not in S.DESCRIPTIONS})
    S.FORMS.update({
        "Z1: X1 in the patch space": ["above_patches_at_size", "above_feat", "above_patches_at_size_x_prel",
                                      "above_feat_x_prel"],
        "Z2: X2 in the patch space": ["train_acc", "above_patches_at_size", "above_feat", "consistency_patches",
                                      "noise_patches", "above_patches_at_size_x_prel", "above_feat_x_prel"],
        "Z3: X3 in the patch space": ["train_acc", "above_patches_at_size", "above_feat", "above_early",
                                      "consistency_patches", "noise_patches", "above_patches_at_size_x_prel",
                                      "above_feat_x_prel", "above_early_x_prel"],
        "XZ2: X2 + the patch vote at the training set's size and its consistency": [
            "train_acc", "above_input_at_size", "above_feat", "consistency_input", "noise_input",
            "above_input_at_size_x_reliability", "above_feat_x_reliability", "above_patches_at_size",
            "consistency_patches"],
    })


SIGNALS = {"training accuracy": "clean_accuracy", "pixel vote": "diagnostics.neighbours.input.value",
           "patch vote": f"{BASE}.value", "pixel vote @N": "diagnostics.neighbours.input.at_training_size.value",
           "patch vote @N": f"{BASE}.at_training_size.value"}


def signal_table(records: list[dict]) -> dict:
    """{"zoo data set": {"models": n, signal: (τ against held-out accuracy, MAE read as the accuracy)}}."""
    out = {}
    for zoo, dataset in sorted({(r["zoo"], r["dataset"]) for r in records}):
        group = [r for r in records if (r["zoo"], r["dataset"]) == (zoo, dataset)]
        y = np.array([r["holdout"] for r in group])
        out[f"{zoo} {dataset}"] = {"models": len(group), **{
            name: (S.kendall(v, y), float(np.mean(np.abs(v - y))))
            for name, path in SIGNALS.items() for v in [np.array([r["card"][path] for r in group], float)]}}
    return out


def main() -> int:
    records = S.usable(S.with_curves(S.load_records(("noise", "sweep", "realuse"))))
    baseline = S.evaluate(records)  # estimator v4.2 as published: the same records, before any patch form
    votes = patch_votes(records)
    for r in records:
        r["card"].update(votes[r["name"]])
    add_forms()
    signals = signal_table(records)
    results = S.evaluate(records)
    rows = []
    for name, res in results.items():
        for group, row in res["groups"].items():
            if group == "all" and len(res["groups"]) > 2:
                continue
            e, b = row["estimate"], baseline[name]["groups"][group]["estimate"]
            rows.append({"split": name, "group": group, "models": e["models"],
                         "form": f"{baseline[name]['form'].split(':')[0]} -> {res['form'].split(':')[0]} "
                                 f"({'LAD' if res['loss'] == S.ABSOLUTE else 'LS'})",
                         "mae": [b["mae"], e["mae"]], "coverage": [b["coverage_90"], e["coverage_90"]],
                         "tau": [b["tau"], e["tau"]], "pick": [b["pick_half_pt"], e["pick_half_pt"]]})
    whole = {name: [baseline[name]["groups"]["all"]["estimate"]["mae"], res["groups"]["all"]["estimate"]["mae"]]
             for name, res in results.items()}
    OUT.mkdir(exist_ok=True)
    (OUT / "patches.json").write_text(json.dumps({"rows": rows, "whole": whole, "signals": signals}, indent=1))
    lines = ["# The estimator with the patch-space vote (explored, not shipped)", "",
             "Generated by `python zoo/study_patches.py` (module docstring). Held out, estimator v4.2 as published "
             "-> with the patch-vote forms among the candidates; every split chooses its form and loss by the "
             "same rule.", "", "MAE over each split's held-out models as a whole:", "",
             "| split | v4.2 | with patch forms |", "|---|---:|---:|"]
    lines += [f"| {name} | {a:.3f} | **{b:.3f}** |" for name, (a, b) in whole.items()]
    lines += ["", "Each vote read alone as the accuracy, unfitted, per zoo and data set (Kendall τ against held-out "
              "accuracy / MAE; @N: carried to the training set's size):", "",
              "| zoo, data set | models | " + " | ".join(SIGNALS) + " |", "|---|---:|" + "---:|" * len(SIGNALS)]
    lines += [f"| {g} | {v['models']} | " + " | ".join(f"{v[k][0]:.3f} / {v[k][1]:.3f}" for k in SIGNALS) + " |"
              for g, v in signals.items()]
    lines += ["", "| split | group | models | form | MAE | 90% coverage | τ | pick ≤ 0.5 pt |",
              "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['split']} | {r['group']} | {r['models']} | {r['form']} | "
                     f"{r['mae'][0]:.3f} → **{r['mae'][1]:.3f}** | {r['coverage'][0]:.2f} → {r['coverage'][1]:.2f} | "
                     f"{r['tau'][0]:.3f} → {r['tau'][1]:.3f} | {r['pick'][0]:.2f} → {r['pick'][1]:.2f} |")
    (OUT / "patches.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
