#!/usr/bin/env python
"""The estimate of held-out accuracy, v4: training accuracy minus a predicted generalization gap, evaluated the
way users meet it. The study behind docs/validity.md ("Estimator v4") and genaudit/estimate_model.json.

    python zoo/study_validity.py compute --zoo all        # the per-model caches (three zoos)
    python zoo/study_curve.py                             # the input vote at each training set's size
    python zoo/study_estimate.py [--write-estimator]      # tables -> zoo/validity/estimate_v4.md, .json

Why this form. Reading the estimate off the neighbour vote caps it at the vote's own accuracy: a model that fits
clean labels agrees with the vote exactly as often as the labels do, so the v0.2 estimate saturated at 0.87-0.90
on MNIST models that reach 0.98 and at 0.34 on CIFAR-10 models that reach 0.7. Training accuracy read as the
estimate has no ceiling and is the baseline to beat; the fitted part here is the *gap* between training and
held-out accuracy (Jiang et al. 2019 predict the gap, not the accuracy), from terms that say how far the model's
predictions on its training images depart from what a reference that never memorized them says:

- `shortfall_<space>` = reference_agreement - value: how much less the model agrees with the leave-one-out
  neighbour vote than the labels do (> 0: the model follows labels its neighbours outvote: memorization);
- `excess_<space>` = clean_accuracy - reference_agreement: how much more the model fits its labels than the
  vote can (the part of the training accuracy no neighbour reference certifies: hard data or memorization);
- `consistency_<space>`: agreement of two disjoint votes (how reliable that reference is, model-free for input);

in the input (pixel), early-layer and feature-layer spaces; and the input vote carried to the size of the model's
training set (`above_input_at_size`, from `diagnostics.neighbours.input.at_training_size`): the vote among 2,000
audited samples is a k-NN classifier trained on 2,000 images, which a model trained on 60,000 is bound to beat,
so read raw it made every well-trained full-data model look like it had a gap of 0.08-0.09. The forms (fixed below
before any evaluation) are linear in those terms, fitted by least squares or by least absolute deviations (v4.2;
v4 and v4.1 least squares only); the form and loss used in each split are the sparsest whose grouped (by training
run) 5-fold cross-validated MAE inside that split's fitting data is within 0.002 of the best. The 90% interval
is conformal on residuals normalized by (0.03 + |predicted gap|), calibrated on each (zoo, data set) of the
fitting data predicted by a fit on the others (v4.1; v4 used a random 30% of the runs: `calibrate`) (errors grow with the gap: narrow where a
model is predicted to generalize, wide on hard data), plus the out-of-range widening of v0.2; where pixel
neighbours are no reliable reference (their two disjoint votes agree on fewer than half the samples: heavy label
noise, natural images), at least the 90% quantile of the absolute errors of such calibration models (added in v4
after v4's first evaluation left CIFAR-10's coverage at 0.80: the natural threshold 0.5, the same results at 0.6).

Every evaluation fits on some zoos or data sets and evaluates on others it never saw (leave one zoo out, leave
one data set out: a fit that never saw CIFAR-10 is evaluated on CIFAR-10). Beside the estimate, on every group:
training accuracy as the estimate, the raw input-space vote, that vote carried to the training set's size (read
as the accuracy, unfitted; carried whole, and part by part), and the v0.2 estimator (as shipped).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_validity import (  # noqa: E402
    CACHE,
    OUT,
    ROOT,
    SAMPLES,
    SEED,
    conformal_quantile,
    kendall,
    load_records,
    selection,
    split_runs,
)

SPACES = {"input": "input", "early": "early", "feat": "features"}
PATHS = {"train_acc": ["clean_accuracy"]}
for short, space in SPACES.items():
    base = f"diagnostics.neighbours.{space}"
    PATHS[f"shortfall_{short}"] = [f"{base}.reference_agreement", f"-{base}.value"]
    PATHS[f"excess_{short}"] = ["clean_accuracy", f"-{base}.reference_agreement"]
    PATHS[f"consistency_{short}"] = [f"{base}.vote_consistency"]
    PATHS[f"vote_{short}"] = [f"{base}.value"]
    PATHS[f"noise_{short}"] = [f"{base}.vote_consistency", f"-{base}.reference_agreement"]
    PATHS[f"beyond_{short}"] = ["clean_accuracy", f"-{base}.vote_consistency"]
    PATHS[f"above_{short}"] = ["clean_accuracy", f"-{base}.value"]
    # the same, weighted by how reliable the pixel neighbours are (their vote consistency)
    PATHS[f"above_{short}_x_reliability"] = (["clean_accuracy", f"-{base}.value"],
                                             ["diagnostics.neighbours.input.vote_consistency"])
AT_SIZE = "diagnostics.neighbours.input.at_training_size"
PATHS["above_input_at_size"] = ["clean_accuracy", f"-{AT_SIZE}.value"]
PATHS["above_input_at_size_x_reliability"] = (["clean_accuracy", f"-{AT_SIZE}.value"],
                                              ["diagnostics.neighbours.input.vote_consistency"])
# The patch space (genaudit.patches, since estimator v5): the vote among the audited images' patch features, carried
# to the training set's size like the pixel vote (zoo/study_patches.py computes it for every model: with_patches).
PATCHES = "diagnostics.neighbours.patches"
PATHS["above_patches_at_size"] = ["clean_accuracy", f"-{PATCHES}.at_training_size.value"]
PATHS["consistency_patches"] = [f"{PATCHES}.vote_consistency"]
PATHS["noise_patches"] = [f"{PATCHES}.vote_consistency", f"-{PATCHES}.reference_agreement"]
for name, paths in {"above_patches_at_size": PATHS["above_patches_at_size"],
                    "above_feat": PATHS["above_feat"], "above_early": PATHS["above_early"]}.items():
    PATHS[f"{name}_x_patch_reliability"] = (paths, [f"{PATCHES}.vote_consistency"])
# The normalized margins at the feature layer (genaudit/diagnostics/margins.py; the study's caches hold them,
# computed by the same function with the labels each model trained on: with_margins)
MARGINS = "diagnostics.margins"
MARGIN_QUARTILES = ("log_q1", "log_q2", "log_q3")
for _q in MARGIN_QUARTILES:
    PATHS[f"margin_{_q}"] = [f"{MARGINS}.{_q}"]
# What a model fits beyond the patch vote's ceiling (the labels' own agreement with it), up to the share of labels
# the vote calls noise (since estimator v5.2; zoo/study_ceiling.py's docstring says why): with_memorized
MEMORIZED = f"{PATCHES}.memorized"
PATHS["memorized_patches"] = [MEMORIZED]
PATHS["memorized_patches_x_patch_reliability"] = ([MEMORIZED], [f"{PATCHES}.vote_consistency"])
DESCRIPTIONS = {
    "above_patches_at_size": "patch space: training accuracy minus the model's agreement with the neighbour vote "
                             "carried to the training set's size (the vote's learning curve)",
    "consistency_patches": "patch space: agreement of two disjoint neighbour votes (reliability of the reference)",
    "noise_patches": "patch space: vote consistency minus the labels' agreement with the vote (label noise: two "
                     "votes agree with each other more than with the labels)",
    "above_patches_at_size_x_patch_reliability": "above_patches_at_size times the patch vote's consistency",
    "above_feat_x_patch_reliability": "above_feat times the patch vote's consistency (trust in each space depends "
                                      "on how reliable patch neighbours are)",
    "above_early_x_patch_reliability": "above_early times the patch vote's consistency",
    "above_input_at_size": "input space: training accuracy minus the model's agreement with the neighbour vote "
                           "carried to the training set's size (the vote's learning curve)",
    "above_input_at_size_x_reliability": "above_input_at_size times the pixel vote's consistency",
    "train_acc": "training accuracy on the audited samples (given labels)",
    **{f"margin_{q}": f"the {name} of the log normalized margins at the feature layer (Jiang et al. 2019)"
       for q, name in zip(MARGIN_QUARTILES, ("first quartile", "median", "third quartile"))},
    "memorized_patches": "patch space: training accuracy above the labels' agreement with the vote (the ceiling), "
                         "up to the vote's label noise (vote consistency minus the labels' agreement): the wrong "
                         "labels the model fits",
    "memorized_patches_x_patch_reliability": "memorized_patches times the patch vote's consistency",
    **{f"shortfall_{s}": f"{sp} space: labels' agreement with the neighbour vote minus the model's (memorization)"
       for s, sp in SPACES.items()},
    **{f"excess_{s}": f"{sp} space: training accuracy minus the labels' agreement with the vote (what no "
                      f"neighbour certifies)" for s, sp in SPACES.items()},
    **{f"consistency_{s}": f"{sp} space: agreement of two disjoint neighbour votes (reliability of the reference)"
       for s, sp in SPACES.items()},
    **{f"vote_{s}": f"{sp} space: the model's agreement with the neighbour vote" for s, sp in SPACES.items()},
    **{f"above_{s}": f"{sp} space: training accuracy minus the model's agreement with the neighbour vote"
       for s, sp in SPACES.items()},
    **{f"above_{s}_x_reliability": f"above_{s} times the pixel vote's consistency (trust in each space depends "
                                   f"on how reliable pixel neighbours are)" for s in SPACES},
    **{f"noise_{s}": f"{sp} space: vote consistency minus the labels' agreement with the vote (label noise: two "
                     f"votes agree with each other more than with the labels)" for s, sp in SPACES.items()},
    **{f"beyond_{s}": f"{sp} space: training accuracy minus vote consistency (how far the model fits beyond what "
                      f"the data's neighbours agree on: hard data)" for s, sp in SPACES.items()},
}

# The gap forms, fixed before any evaluation: least squares of (training accuracy - held-out accuracy) on these.
FORMS = {
    "T: training accuracy (gap 0)": None,
    "T-c: training accuracy minus a constant gap": [],
    "P1: pixel shortfall + excess": ["shortfall_input", "excess_input"],
    "P2: P1 + pixel consistency": ["shortfall_input", "excess_input", "consistency_input"],
    "F1: feature shortfall + excess": ["shortfall_feat", "excess_feat"],
    "PF: P2 + F1": ["shortfall_input", "excess_input", "consistency_input", "shortfall_feat", "excess_feat"],
    "PFE: PF + early shortfall + excess": ["shortfall_input", "excess_input", "consistency_input", "shortfall_feat",
                                          "excess_feat", "shortfall_early", "excess_early"],
    "PFC: PF + feature consistency": ["shortfall_input", "excess_input", "consistency_input", "shortfall_feat",
                                      "excess_feat", "consistency_feat"],
    "N1: pixel shortfall + label noise + beyond": ["shortfall_input", "noise_input", "beyond_input"],
    "N2: N1 + the same in feature space": ["shortfall_input", "noise_input", "beyond_input", "shortfall_feat",
                                           "noise_feat", "beyond_feat"],
    "N3: N2 + early layer": ["shortfall_input", "noise_input", "beyond_input", "shortfall_feat", "noise_feat",
                             "beyond_feat", "shortfall_early", "noise_early", "beyond_early"],
    "V1: training accuracy above each space's vote": ["above_input", "above_feat", "above_early"],
    "V2: V1 + consistencies": ["above_input", "above_feat", "above_early", "consistency_input", "consistency_feat"],
    "V3: V1 + pixel label noise and beyond": ["above_input", "above_feat", "above_early", "noise_input",
                                              "beyond_input"],
    "V4: V3 + feature label noise and beyond": ["above_input", "above_feat", "above_early", "noise_input",
                                                "beyond_input", "noise_feat", "beyond_feat"],
    "R1: V1, each space's weight moved by the pixel vote's reliability": [
        "train_acc", "above_input", "above_feat", "above_early", "consistency_input", "noise_input",
        "above_input_x_reliability", "above_feat_x_reliability", "above_early_x_reliability"],
    "R2: R1 without the early layer": ["train_acc", "above_input", "above_feat", "consistency_input", "noise_input",
                                       "above_input_x_reliability", "above_feat_x_reliability"],
    "X0: V1 without the early layer, the pixel vote at the training set's size": ["above_input_at_size",
                                                                                   "above_feat"],
    "X1: X0, each space's weight moved by the pixel vote's reliability": [
        "above_input_at_size", "above_feat", "above_input_at_size_x_reliability", "above_feat_x_reliability"],
    "X2: R2 with the pixel vote at the training set's size": [
        "train_acc", "above_input_at_size", "above_feat", "consistency_input", "noise_input",
        "above_input_at_size_x_reliability", "above_feat_x_reliability"],
    "X3: R1 with the pixel vote at the training set's size": [
        "train_acc", "above_input_at_size", "above_feat", "above_early", "consistency_input", "noise_input",
        "above_input_at_size_x_reliability", "above_feat_x_reliability", "above_early_x_reliability"],
    # v5: X1-X3 with every pixel-vote term read in the patch space, and X2 with the patch vote added; fixed before
    # their first evaluation (zoo/study_patches.py, which also evaluates the rule without them: PATCH_FORMS)
    "Z1: X1 in the patch space": ["above_patches_at_size", "above_feat",
                                  "above_patches_at_size_x_patch_reliability", "above_feat_x_patch_reliability"],
    "Z2: X2 in the patch space": ["train_acc", "above_patches_at_size", "above_feat", "consistency_patches",
                                  "noise_patches", "above_patches_at_size_x_patch_reliability",
                                  "above_feat_x_patch_reliability"],
    "Z3: X3 in the patch space": ["train_acc", "above_patches_at_size", "above_feat", "above_early",
                                  "consistency_patches", "noise_patches", "above_patches_at_size_x_patch_reliability",
                                  "above_feat_x_patch_reliability", "above_early_x_patch_reliability"],
    "XZ2: X2 + the patch vote at the training set's size and its consistency": [
        "train_acc", "above_input_at_size", "above_feat", "consistency_input", "noise_input",
        "above_input_at_size_x_reliability", "above_feat_x_reliability", "above_patches_at_size",
        "consistency_patches"],
    # v5.1: Z1 plus the log normalized margins (Jiang et al. 2019); fixed before their first evaluation in
    # zoo/study_margins.py, which also evaluates the rule without them (MARGIN_FORMS)
    "M1: Z1 + the median log normalized margin": [
        "above_patches_at_size", "above_feat", "above_patches_at_size_x_patch_reliability",
        "above_feat_x_patch_reliability", "margin_log_q2"],
    "M2: Z1 + the three quartiles of the log normalized margins": [
        "above_patches_at_size", "above_feat", "above_patches_at_size_x_patch_reliability",
        "above_feat_x_patch_reliability", "margin_log_q1", "margin_log_q2", "margin_log_q3"],
    # v5.2: Z1 plus what the model fits beyond the patch vote's ceiling, up to its label noise; fixed before their
    # first evaluation in zoo/study_ceiling.py (commit 0d2ae83), which also evaluates the rule without them
    "K1: Z1 + what the model fits beyond the patch vote's ceiling, up to its label noise": [
        "above_patches_at_size", "above_feat", "above_patches_at_size_x_patch_reliability",
        "above_feat_x_patch_reliability", "memorized_patches"],
    "K2: K1 + that term weighted by the patch vote's reliability": [
        "above_patches_at_size", "above_feat", "above_patches_at_size_x_patch_reliability",
        "above_feat_x_patch_reliability", "memorized_patches", "memorized_patches_x_patch_reliability"],
}
MARGIN_FORMS = [form for form in FORMS if form.startswith("M")]
CEILING_FORMS = [form for form in FORMS if form.startswith("K")]
PATCH_FORMS = [form for form in FORMS if form.startswith(("Z", "XZ", "M", "K"))]  # the forms that read the patch space
# Rule P (adopted 2026-12-07: zoo/study_image_forms.py): the estimator of audits with a patch space (images) is chosen
# among the forms that read it, as the fallback is among the others. GENAUDIT_STUDY_CANDIDATES=all: among every form,
# the rule before P (zoo/validity/estimate_v4.md and estimate_rebuilt.md were made so).
IMAGE_CANDIDATES = list(FORMS) if os.environ.get("GENAUDIT_STUDY_CANDIDATES") == "all" else PATCH_FORMS
# GENAUDIT_STUDY_INTERCEPT=both (explored for v5, not adopted: docs/validity.md): every form also without intercept
NO_INTERCEPT = " [no intercept]"
if os.environ.get("GENAUDIT_STUDY_INTERCEPT") == "both":
    FORMS.update({form + NO_INTERCEPT: terms for form, terms in list(FORMS.items()) if terms})
# Post hoc, NOT among the forms the selection rule picks from (added after the tables above were read, so it would
# bias the rule): the pixel vote at the training set's size carried part by part, read as the accuracy where pixel
# neighbours are a reliable reference, X3's gap where they are not. v4 set aside the same form on the whole carry,
# which made underfit models look better than they were, until the zoos held underfit models (block `small`).
# Fitted and evaluated in every split exactly like the chosen form; reported in its own table.
DIRECT = {"D: the pixel vote at the training set's size (by part) read as the accuracy where pixel neighbours are "
          "reliable, X3 where they are not": "X3: R1 with the pixel vote at the training set's size"}
BASELINE = "T: training accuracy (gap 0)"
PARSIMONY = 0.002
SQUARES, ABSOLUTE = "least squares", "least absolute deviations"
# the fit's loss, chosen by the rule like the form (v4.2); GENAUDIT_STUDY_LOSSES=squares: least squares only (v4.1)
LOSSES = (SQUARES,) if os.environ.get("GENAUDIT_STUDY_LOSSES") == "squares" else (SQUARES, ABSOLUTE)
UNRELIABLE = 0.5  # pixel vote consistency below which the interval gets the unreliable models' absolute floor
# "split" (v4), "group-out" (v4.1 on: calibrate); "worst-group" or "shifted" (explored, not adopted: group_quantile)
CALIBRATION = os.environ.get("GENAUDIT_STUDY_CALIBRATION", "group-out")
GROUP_CALIBRATIONS = ("worst-group", "shifted")
SCALE_FLOOR = 0.03  # residuals are normalized by (SCALE_FLOOR + |predicted gap|): about the error at gap 0


def signed_sum(record: dict, paths: list[str]) -> float | None:
    total = 0.0
    for path in paths:
        sign, path = (-1.0, path[1:]) if path.startswith("-") else (1.0, path)
        v = record["card"].get(path)
        if v is None or not math.isfinite(v):
            return None
        total += sign * v
    return total


def read(record: dict, name: str) -> float | None:
    """A term from a cached record's scorecard values: the signed sum of its paths, or the product of two such
    sums (a tuple of two path lists)."""
    spec = PATHS[name]
    if isinstance(spec, tuple):
        a, b = (signed_sum(record, part) for part in spec)
        return None if a is None or b is None else a * b
    return signed_sum(record, spec)


def with_curves(records: list[dict]) -> list[dict]:
    """Each record's scorecard values plus the input vote at the training set's size (zoo/study_curve.py)."""
    curves = json.loads((CACHE / "curves.json").read_text())
    for r in records:
        r["card"].update(curves.get(f"{r['zoo']}/{r['name']}", {}))
    return records


def with_patches(records: list[dict]) -> list[dict]:
    """Each record's scorecard values plus its patch-space vote, as the audit writes it under
    diagnostics.neighbours.patches (value, reference_agreement, vote_consistency, at_training_size.value and
    .value_by_part). For each training set, the 2,000 images its models were audited on (`load_data`, the study's
    seed) get their patch space (`genaudit.patches.patch_space`, as the audit builds it) and 20 nearest neighbours
    once; each model's cached predictions are then voted with the labels it was trained on. Cached in
    CACHE/patches.json (a few seconds per training set the first time)."""
    from genaudit.data import load_data
    from genaudit.patches import patch_space

    store = CACHE / "patches.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    todo = [r for r in records if r["name"] not in done]
    for npz in sorted({r["npz"] for r in todo}):
        start = time.perf_counter()
        ds = load_data(npz, samples=SAMPLES, seed=SEED)  # the samples the study audited
        group = [r for r in todo if r["npz"] == npz]
        runs = [(np.load(CACHE / r["zoo"] / f"{Path(r['name']).stem}.npz")["pred"].astype(np.int64),
                 int(r["card"]["diagnostics.neighbours.input.at_training_size.size"])) for r in group]
        for r, votes in zip(group, patch_votes(patch_space(ds.preprocess(ds.x)), np.asarray(ds.y), runs)):
            done[r["name"]] = {f"{PATCHES}.{path}": value for path, value in votes.items()}
        store.write_text(json.dumps(done))
        print(f"{Path(npz).name}: {len(group)} models, {time.perf_counter() - start:.1f} s", flush=True)
    for r in records:
        r["card"].update(done.get(r["name"], {}))
    return records


def patch_votes(space: np.ndarray, labels: np.ndarray, runs: list[tuple[np.ndarray, int]]) -> list[dict]:
    """The patch vote of each of `runs` (a model's predictions on the audited samples, and the size of its training
    set) as the audit computes it in `space`: its agreement with the labels' vote, the labels' own agreement, the
    vote's consistency, and the agreement carried to the training set's size (whole and by part), keyed by their
    paths under diagnostics.neighbours.patches. The searches depend on the space alone: made once for all runs."""
    from genaudit.diagnostics.neighbours import K, curve_neighbours, nearest_neighbours, neighbour_agreement, \
        vote_at_size, vote_of

    idx, dist = nearest_neighbours(space, 2 * K)
    vote = vote_of(idx[:, :K], dist[:, :K], labels)  # the labels' vote: the same for every model
    searches = curve_neighbours(space, K, seed=SEED, strata=labels)
    out = []
    for pred, size in runs:
        found = neighbour_agreement(None, labels, pred, K, neighbours=(idx, dist))
        at = vote_at_size(None, labels, pred, vote, size, K, seed=SEED, strata=labels, searches=searches)
        out.append({"value": found["value"], "reference_agreement": found["reference_agreement"],
                    "vote_consistency": found["vote_consistency"], "at_training_size.value": at["value"],
                    "at_training_size.value_by_part": at["value_by_part"]})
    return out


def with_margins(records: list[dict]) -> list[dict]:
    """Each record's margin quartiles (the study's cache, reference = the labels it trained on) as scorecard
    values at the scorecard's own paths (diagnostics.margins.log_q1, ...)."""
    for r in records:
        r["card"].update({f"{MARGINS}.{q}": r["new"]["margins"][q] for q in MARGIN_QUARTILES})
    return records


def memorized(card: dict) -> float | None:
    """min(max(clean_accuracy - reference_agreement, 0), max(vote_consistency - reference_agreement, 0)) in the patch
    space, from a record's values (None when one is missing)."""
    values = [card.get(path) for path in ("clean_accuracy", f"{PATCHES}.reference_agreement",
                                          f"{PATCHES}.vote_consistency")]
    if any(v is None for v in values):
        return None
    accuracy, reference, consistency = values
    return min(max(accuracy - reference, 0.0), max(consistency - reference, 0.0))


def with_memorized(records: list[dict]) -> list[dict]:
    """Each record's `memorized` term as a scorecard value at MEMORIZED (from its patch-space values)."""
    for r in records:
        value = memorized(r["card"])
        if value is not None:
            r["card"][MEMORIZED] = value
    return records


def study_records(extend=lambda records: records, zoos: tuple[str, ...] = ("noise", "sweep", "realuse")) -> list[dict]:
    """Every model of `zoos` (default the estimator's three) with every value a form reads (the records each split
    is fitted and evaluated on); `extend` adds the values of forms under exploration."""
    return usable(extend(with_memorized(with_margins(with_patches(with_curves(load_records(zoos)))))))


def usable(records: list[dict]) -> list[dict]:
    names = [n for f in FORMS.values() if f for n in f] + ["train_acc"]
    return [r for r in records if r["holdout"] is not None and all(read(r, n) is not None for n in names)]


def matrix(records, feats) -> np.ndarray:
    return np.array([[read(r, f) for f in feats] for r in records], float).reshape(len(records), len(feats))


def gaps(records) -> np.ndarray:
    return np.array([read(r, "train_acc") - r["holdout"] for r in records])


def fit(records, form: str, loss: str = SQUARES) -> dict:
    """The gap fitted on the form's terms (with intercept) by `loss` (`solve`); `range` of each term in the fitting
    data."""
    if form in DIRECT:
        return {**fit(records, DIRECT[form], loss), "form": form, "direct": f"{AT_SIZE}.value_by_part"}
    feats = FORMS[form]
    if feats is None:
        return {"form": form, "loss": loss, "intercept": 0.0, "coefficients": {}, "range": {}}
    x = matrix(records, feats)
    if form.endswith(NO_INTERCEPT):
        coef = np.concatenate([[0.0], solve(x, gaps(records), balance(records), loss)])
    else:
        coef = solve(np.column_stack([np.ones(len(records)), x]), gaps(records), balance(records), loss)
    return {"form": form, "loss": loss, "intercept": float(coef[0]),
            "coefficients": dict(zip(feats, map(float, coef[1:]))),
            "range": {f: [float(x[:, j].min()), float(x[:, j].max())] for j, f in enumerate(feats)}}


def solve(a: np.ndarray, y: np.ndarray, w: np.ndarray, loss: str) -> np.ndarray:
    """Coefficients c minimizing sum_i w_i (y_i - a_i c)^2 (least squares) or sum_i w_i |y_i - a_i c| (least
    absolute deviations: the mean absolute error the estimate is judged by, so a few huge errors, such as the
    label-noise zoo's models below chance, pull the fit no harder than their count). The second is the linear
    program min sum w (u + v) over a c + u - v = y, u, v >= 0 (HiGHS; deterministic)."""
    if loss == SQUARES:
        root = np.sqrt(w)
        return np.linalg.lstsq(a * root[:, None], y * root, rcond=None)[0]
    from scipy.optimize import linprog
    from scipy.sparse import csc_matrix, hstack, identity

    n, p = a.shape
    equality = hstack([csc_matrix(a), identity(n), -identity(n)], format="csc")
    done = linprog(np.concatenate([np.zeros(p), w, w]), A_eq=equality, b_eq=y,
                   bounds=[(None, None)] * p + [(0, None)] * (2 * n), method="highs")
    if not done.success:
        raise RuntimeError(f"least absolute deviations: {done.message}")
    return done.x[:p]


def balance(records) -> np.ndarray:
    """Least-squares weights: every group (zoo, and for the real-use zoo its data set) weighs the same in the fit,
    whatever its size (the 756-model label-noise zoo would otherwise decide the coefficients alone)."""
    groups = [group_of(r) for r in records]
    counts = {g: groups.count(g) for g in set(groups)}
    return np.array([1.0 / counts[g] for g in groups])


def predict(model: dict, records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, predicted gap, out-of-range widening) per record."""
    feats = list(model["coefficients"])
    t = np.array([read(r, "train_acc") for r in records])
    if not feats:
        gap = np.full(len(records), model["intercept"])
        return np.clip(t - gap, 0, 1), gap, np.zeros(len(records))
    x = matrix(records, feats)
    b = np.array([model["coefficients"][f] for f in feats])
    gap = model["intercept"] + x @ b
    lo = np.array([model["range"][f][0] for f in feats])
    hi = np.array([model["range"][f][1] for f in feats])
    widen = (np.maximum(lo - x, 0) + np.maximum(x - hi, 0)) @ np.abs(b)
    if "direct" in model:  # where pixel neighbours are reliable: the carried vote is the estimate
        reliable = np.array([not unreliable(r) for r in records])
        direct = np.array([r["card"][model["direct"]] for r in records])
        gap = np.where(reliable, t - direct, gap)
        widen = np.where(reliable, 0.0, widen)
    return np.clip(t - gap, 0, 1), gap, widen


def scale(gap: np.ndarray) -> np.ndarray:
    return SCALE_FLOOR + np.abs(gap)


def calibrate(records, form: str, loss: str = SQUARES, seed: int = 0) -> dict:
    """The 90% interval's calibration, then the form fitted on all of `records`. CALIBRATION "split" (v4): split
    conformal on normalized residuals, fit on 70% of the runs, the 90% quantile of |residual| / scale on the other
    30%. "group-out" (v4.1): every (zoo, data set) of the fitting data in turn is predicted by a fit on the others,
    and the quantile is taken over all those residuals: they are the errors of a model from a zoo and data set the
    fit never saw, which is what a user's model is (the random split's residuals came from runs beside fitted ones,
    and its intervals covered 0.47-0.81 of a held-out data set)."""
    if CALIBRATION == "split" or len({(r["zoo"], r["dataset"]) for r in records}) < 2:
        cal, proper = split_runs(records, 0.3, seed)
        model = fit(proper, form, loss)
        p, gap, _ = predict(model, cal)
        err = np.abs(p - np.array([r["holdout"] for r in cal]))
        res = err / scale(gap)
        quantile = conformal_quantile(res)
        method = {"calibration_models": len(cal), "fit_models": len(proper)}
    else:
        err, res, cal, by_group = [], [], [], []
        for out, p, gap in group_out(records, form, loss):
            signed = (p - np.array([r["holdout"] for r in out])) / scale(gap)
            err.extend(np.abs(p - np.array([r["holdout"] for r in out])))
            res.extend(np.abs(signed))
            by_group.append(signed)
            cal.extend(out)
        err, res = np.array(err), np.array(res)
        quantile = group_quantile(by_group) if CALIBRATION in GROUP_CALIBRATIONS else conformal_quantile(res)
        model = fit(records, form, loss)
        method = {"calibration_models": len(cal), "fit_models": len(records),
                  "calibration": "each (zoo, data set) predicted by a fit on the others"}
    model["conformal"] = {"quantile_90": quantile, **method,
                          "scale": f"{SCALE_FLOOR} + |predicted gap|"}
    low = np.array([unreliable(r) for r in cal])
    model["conformal"]["abs_unreliable"] = conformal_quantile(err[low]) if low.sum() >= 20 else None
    model["conformal"]["unreliable_below"] = UNRELIABLE
    model["conformal"]["unreliable_models"] = int(low.sum())
    return model


def group_out(records, form: str, loss: str = SQUARES) -> list[tuple[list[dict], np.ndarray, np.ndarray]]:
    """Each (zoo, data set) of `records` predicted by a fit on the others: (its records, their estimates, their
    predicted gaps), groups in sorted order. The errors of a model from a zoo and data set the fit never saw."""
    out = []
    for group in sorted({(r["zoo"], r["dataset"]) for r in records}):
        held = [r for r in records if (r["zoo"], r["dataset"]) == group]
        p, gap, _ = predict(fit([r for r in records if (r["zoo"], r["dataset"]) != group], form, loss), held)
        out.append((held, p, gap))
    return out


def group_quantile(by_group: list[np.ndarray]) -> float:
    """The normalized quantile of the group-aware calibrations (explored after v5's evaluation, not adopted:
    docs/validity.md), from each calibration group's signed normalized residuals (estimate - truth) / scale:
    "worst-group", the largest of the groups' own 90% quantiles of |residual| (every calibration group, held out,
    would have been covered at 90%); "shifted", the 90% quantile of the residuals about their group's mean plus the
    largest |group mean| (a new group's bias as large as the worst seen)."""
    if CALIBRATION == "worst-group":
        return max(conformal_quantile(r) for r in by_group)
    within = np.concatenate([r - r.mean() for r in by_group])
    return conformal_quantile(within) + max(abs(r.mean()) for r in by_group)


def unreliable(r) -> bool:
    """Pixel neighbours no reliable reference: two disjoint votes disagree on at least half the samples."""
    return read(r, "consistency_input") < UNRELIABLE


def half_width(model, records, gap, widen) -> np.ndarray:
    """The interval's half-width: normalized conformal, and where the reference is unreliable at least the 90%
    quantile of the absolute errors of such models (their errors do not shrink with the predicted gap)."""
    base = model["conformal"]["quantile_90"] * scale(gap) + widen
    floor = model["conformal"]["abs_unreliable"]
    if floor is None:
        return base
    return np.array([max(b, floor) if unreliable(r) else b for b, r in zip(base, records)])


def cv_errors(records, form: str, loss: str = SQUARES, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indices into `records`, |estimate - held-out accuracy| there), fold by fold: each model predicted by a fit
    on the folds without its training run (runs dealt at random into `folds` folds)."""
    runs = sorted({(r["zoo"], r["run"]) for r in records})
    order = np.random.default_rng(seed).permutation(len(runs))
    fold = {runs[j]: i % folds for i, j in enumerate(order)}
    index, errors = [], []
    for f in range(folds):
        test = [i for i, r in enumerate(records) if fold[(r["zoo"], r["run"])] == f]
        train = [r for r in records if fold[(r["zoo"], r["run"])] != f]
        if train and test:
            p, _, _ = predict(fit(train, form, loss), [records[i] for i in test])
            index.extend(test)
            errors.extend(np.abs(p - np.array([records[i]["holdout"] for i in test])))
    return np.array(index, dtype=np.int64), np.array(errors)


def choose(records, candidates: list[str] | None = None, safe: bool = False,
           balanced: bool = False) -> tuple[str, str, dict]:
    """(form, loss, CV MAE of every (form, loss)): the sparsest form within PARSIMONY of the best grouped-CV MAE
    inside `records` (the fitting data only), over every form (or the `candidates`) fitted with every loss; among
    equally sparse candidates, the lowest CV MAE. With `safe` (zoo/study_safe.py), only among the candidates no
    worse than training accuracy on any group of the fitting data (`no_worse_than_training`), where there are any.
    With `balanced` (zoo/study_balanced.py), the CV MAE weighs every group as the fit does (`balance`)."""
    errors = {(form, loss): cv_errors(records, form, loss) for form in candidates or FORMS for loss in LOSSES
              if loss == SQUARES or FORMS[form] is not None}  # training accuracy alone fits nothing
    weights = balance(records) if balanced else None
    cv = {key: float(np.mean(e) if weights is None else np.average(e, weights=weights[index]))
          for key, (index, e) in errors.items()}
    pool = cv
    if safe:
        pool = {key: cv[key] for key in cv
                if key[0] != BASELINE and no_worse_than_training(records, *errors[key])} or cv
    best = min(pool.values())
    near = [key for key in pool if pool[key] <= best + PARSIMONY]
    form, loss = min(near, key=lambda key: (len(FORMS[key[0]] or []) - (FORMS[key[0]] is None), cv[key]))
    return form, loss, cv


SAFE_MIN_GROUP = 20  # fitting-data models a group needs for `no_worse_than_training` to read it


def no_worse_than_training(records, index: np.ndarray, errors: np.ndarray) -> bool:
    """Whether CV errors (`cv_errors` of `records`) average no more than training accuracy's (read as the estimate)
    in every group of the fitting data with at least SAFE_MIN_GROUP models: each `group_of` and `subgroups`, the
    groups the evaluation reports."""
    labels = [{group_of(records[i])} | subgroups(records[i]) for i in index]
    train = np.array([abs(read(records[i], "train_acc") - records[i]["holdout"]) for i in index])
    for group in set().union(*labels):
        mask = np.array([group in s for s in labels])
        if mask.sum() >= SAFE_MIN_GROUP and errors[mask].mean() > train[mask].mean():
            return False
    return True


def metrics(records, estimate, half=None) -> dict:
    y = np.array([r["holdout"] for r in records])
    estimate = np.asarray(estimate, float)
    ok = np.isfinite(estimate)
    err = np.abs(estimate - y)
    out = {"models": int(ok.sum()), "mae": float(err[ok].mean()) if ok.any() else None,
           "bias": float((estimate - y)[ok].mean()) if ok.any() else None,
           "tau": kendall(estimate[ok], y[ok]) if ok.sum() > 2 else None,
           "pick_2pt": selection([r for r, o in zip(records, ok) if o], estimate[ok])["rate"],
           "pick_half_pt": selection([r for r, o in zip(records, ok) if o], estimate[ok], tol=0.005)["rate"]}
    if half is not None:
        out["coverage_90"] = float(np.mean(err[ok] <= half[ok]))
        out["width_90"] = float(np.mean(2 * half[ok]))
    return out


def group_of(r: dict) -> str:
    if r["zoo"] != "realuse":
        return f"{r['zoo']} zoo"
    return "realuse CIFAR-10" if r["dataset"] == "cifar10" else f"realuse {r['dataset']} (full data)"


def subgroups(r: dict) -> set[str]:
    """The subgroups a model also counts in: full-data runs on clean labels (every epoch; the well-trained models of
    the issue's MAE target), the small CNNs of 1-2 channels that underfit (block 'small'), and the label-noise zoo
    split at 40% wrong labels."""
    if r["zoo"] == "noise":  # where its error comes from: 80-100% wrong labels put held-out accuracy below chance
        return {"noise zoo (0-40% wrong labels)" if r["corruption"] <= 40 else "noise zoo (60-100% wrong labels)"}
    if r["zoo"] != "realuse" or r["dataset"] == "cifar10":
        return set()
    out = {f"realuse {r['dataset']} (full data, clean labels)"} if not r["corruption"] else set()
    if r["arch"] == "cnn" and (r.get("hp") or {}).get("width", 16) <= 2:
        out.add(f"realuse {r['dataset']} (full data, small CNNs)")
    return out


def group_indices(records) -> dict[str, list[int]]:
    """Each group the evaluation reports (`group_of` and `subgroups`, sorted) with the indices of its `records`."""
    groups = sorted({group_of(r) for r in records}.union(*(subgroups(r) for r in records)))
    return {group: [i for i, r in enumerate(records) if group == group_of(r) or group in subgroups(r)]
            for group in groups}


def splits(records) -> dict:
    """Fit on one part, evaluate on a part never fitted on."""
    def by(keep):
        return [r for r in records if keep(r)]

    out = {
        "fit noise+sweep -> eval realuse": (by(lambda r: r["zoo"] != "realuse"), by(lambda r: r["zoo"] == "realuse")),
        "fit all but CIFAR-10 -> eval CIFAR-10": (by(lambda r: r["dataset"] != "cifar10"),
                                                  by(lambda r: r["dataset"] == "cifar10")),
        "fit all but realuse full-data -> eval realuse full-data": (
            by(lambda r: not (r["zoo"] == "realuse" and r["dataset"] != "cifar10")),
            by(lambda r: r["zoo"] == "realuse" and r["dataset"] != "cifar10")),
        "fit all but noise zoo -> eval noise zoo": (by(lambda r: r["zoo"] != "noise"), by(lambda r: r["zoo"] == "noise")),
        "fit all but sweep -> eval sweep": (by(lambda r: r["zoo"] != "sweep"), by(lambda r: r["zoo"] == "sweep")),
        "fit all but MNIST -> eval MNIST": (by(lambda r: r["dataset"] != "mnist"), by(lambda r: r["dataset"] == "mnist")),
        "fit all but Fashion-MNIST -> eval Fashion-MNIST": (by(lambda r: r["dataset"] != "fashion-mnist"),
                                                           by(lambda r: r["dataset"] == "fashion-mnist")),
        # leave one architecture family out (added in v4.1; the forms and the rule are unchanged)
        **{f"fit all but {name} -> eval {name}": (by(lambda r, a=arch: r["arch"] != a), by(lambda r, a=arch: r["arch"] == a))
           for arch, name in (("mlp", "MLPs"), ("cnn", "CNNs"), ("resnet", "ResNets"))},
    }
    return {k: v for k, v in out.items() if v[0] and v[1]}


def v02(records) -> np.ndarray:
    """The scorecard's own estimate (`estimate.accuracy`): v0.2's as shipped in the first machine's caches, the
    published estimator's in caches made by genaudit 0.5.x."""
    return np.array([np.nan if (v := r["card"].get("estimate.accuracy")) is None else v for r in records])


def evaluate(records, candidates: list[str] | None = None, safe: bool = False, balanced: bool = False) -> dict:
    """Every split: the form and loss chosen on its fitting data (among `candidates`, default every form; `safe`,
    `balanced`: `choose`), fitted and calibrated there, evaluated per group of its held-out models beside the
    baselines."""
    results = {}
    for name, (train, test) in splits(records).items():
        form, loss, cv = choose(train, candidates, safe, balanced)
        model = calibrate(train, form, loss)
        p, gap, widen = predict(model, test)
        half = half_width(model, test, gap, widen)
        rows = {}
        indices = group_indices(test)
        for group, idx in indices.items():
            sub = [test[i] for i in idx]
            rows[group] = {
                "estimate": metrics(sub, p[idx], half[idx]),
                "train_acc": metrics(sub, [read(r, "train_acc") for r in sub]),
                "vote_input": metrics(sub, [read(r, "vote_input") for r in sub]),
                "vote_at_size": metrics(sub, [r["card"][f"{AT_SIZE}.value"] for r in sub]),
                "vote_by_part": metrics(sub, [r["card"][f"{AT_SIZE}.value_by_part"] for r in sub]),
                "patches_at_size": metrics(sub, [r["card"][f"{PATCHES}.at_training_size.value"] for r in sub]),
                "v0.2": metrics(sub, v02(sub)),
            }
        for form_d in DIRECT:
            model_d = calibrate(train, form_d)
            p_d, gap_d, widen_d = predict(model_d, test)
            half_d = half_width(model_d, test, gap_d, widen_d)
            for group, idx in indices.items():
                rows[group]["direct"] = metrics([test[i] for i in idx], p_d[idx], half_d[idx])
        rows["all"] = {"estimate": metrics(test, p, half),
                       "train_acc": metrics(test, [read(r, "train_acc") for r in test]),
                       "vote_input": metrics(test, [read(r, "vote_input") for r in test]),
                       "vote_at_size": metrics(test, [r["card"][f"{AT_SIZE}.value"] for r in test]),
                       "vote_by_part": metrics(test, [r["card"][f"{AT_SIZE}.value_by_part"] for r in test]),
                       "patches_at_size": metrics(test, [r["card"][f"{PATCHES}.at_training_size.value"]
                                                         for r in test]),
                       "v0.2": metrics(test, v02(test))}
        results[name] = {"form": form, "loss": loss, "cv": _cv_table(cv), "fit_models": len(train), "eval_models": len(test),
                         "coefficients": model["coefficients"], "intercept": model["intercept"],
                         "quantile_90": model["conformal"]["quantile_90"], "groups": rows}
    return results


def _cv_table(cv: dict) -> dict:
    """CV MAE keyed "form (loss)" (JSON keys are strings)."""
    return {f"{form} ({loss})": value for (form, loss), value in cv.items()}


def fmt(v, digits=3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def before_after(baseline: dict, results: dict) -> tuple[list[dict], dict]:
    """Two evaluations of every split (the rule with fewer candidates, then with more) side by side: one row per
    split and held-out group (the form each chose; MAE, 90% coverage, Kendall τ and picks within 0.5 points, before
    and after), and each split's MAE on its held-out models as a whole."""
    rows = []
    for name, res in results.items():
        for group, row in res["groups"].items():
            if group == "all" and len(res["groups"]) > 2:
                continue
            e, b = row["estimate"], baseline[name]["groups"][group]["estimate"]
            rows.append({"split": name, "group": group, "models": e["models"],
                         "form": f"{baseline[name]['form'].split(':')[0]} -> {res['form'].split(':')[0]} "
                                 f"({'LAD' if res['loss'] == ABSOLUTE else 'LS'})",
                         "mae": [b["mae"], e["mae"]], "coverage": [b["coverage_90"], e["coverage_90"]],
                         "tau": [b["tau"], e["tau"]], "pick": [b["pick_half_pt"], e["pick_half_pt"]]})
    whole = {name: [baseline[name]["groups"]["all"]["estimate"]["mae"], res["groups"]["all"]["estimate"]["mae"]]
             for name, res in results.items()}
    return rows, whole


def before_after_lines(rows: list[dict]) -> list[str]:
    """`before_after`'s rows as a markdown table."""
    lines = ["| split | group | models | form | MAE | 90% coverage | τ | pick ≤ 0.5 pt |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['split']} | {r['group']} | {r['models']} | {r['form']} | "
                     f"{r['mae'][0]:.3f} → **{r['mae'][1]:.3f}** | {r['coverage'][0]:.2f} → {r['coverage'][1]:.2f} | "
                     f"{r['tau'][0]:.3f} → {r['tau'][1]:.3f} | {r['pick'][0]:.2f} → {r['pick'][1]:.2f} |")
    return lines


def whole_lines(whole: dict, before: str, after: str, extra: dict[str, dict] | None = None) -> list[str]:
    """`before_after`'s MAE of each split's held-out models as a whole as a markdown table (columns `before`,
    `after` and each of `extra`: a column name and its MAE by split)."""
    extra = extra or {}
    lines = ["| split | " + " | ".join([before, after, *extra]) + " |", "|---|" + "---:|" * (2 + len(extra))]
    for name, (a, b) in whole.items():
        lines.append(f"| {name} | {a:.3f} | **{b:.3f}** |" + "".join(f" {col[name]:.3f} |" for col in extra.values()))
    return lines


def explore(name: str, title: str, extend, forms: dict, imposed: str, groups: tuple[str, ...], rule_column: str,
            tau: bool = False) -> int:
    """An exploration of new gap forms, fixed before their first run: every split chooses by the shipped rule with
    `forms` among the candidates (the records' scorecard values extended by `extend`), and `imposed` is also fitted
    in every split (post hoc, not a candidate for shipping). Writes zoo/validity/<name>.json and .md (under
    `title`): per split the rule's choice against the shipped evaluation's, the CV MAE of Z1 and of each new form,
    and per group (training accuracy's MAE in brackets) held-out MAE / 90% coverage (/ Kendall τ with `tau`) of
    the shipped evaluation, the rule's (`rule_column`) and the imposed form."""
    FORMS.update(forms)
    records = study_records(extend)
    shipped = json.loads((OUT / "estimate_v4.json").read_text())
    ruled, forced = evaluate(records), evaluate(records, [imposed])
    short = imposed.split(":")[0]
    (OUT / f"{name}.json").write_text(json.dumps({"rule": ruled, f"forced_{short.lower()}": forced}, indent=1))

    def cell(result: dict, group: str) -> str:
        row = result["groups"].get(group)
        if row is None:
            return "–"
        e = row["estimate"]
        return f"{e['mae']:.3f} / {e['coverage_90']:.2f}" + (f" / τ {e['tau']:.3f}" if tau else "")

    prefixes = [form.split(":")[0] + ":" for form in forms]
    lines = [f"# {title}", "", f"Generated by `python zoo/study_{name}.py` (the docstring has the forms, fixed before "
             f"their first run). Each cell: held-out MAE / 90% coverage{' / Kendall τ' if tau else ''}; training "
             "accuracy's MAE in brackets.", ""]
    for split in ruled:
        cv = ruled[split]["cv"]
        best = {p: min(v for k, v in cv.items() if k.startswith(p)) for p in ("Z1:", *prefixes)}
        lines += [f"## {split}", "",
                  f"The rule chose **{ruled[split]['form'].split(':')[0]}** (shipped evaluation: "
                  f"{shipped[split]['form'].split(':')[0]}). CV MAE inside the fitting data: best "
                  f"{min(cv.values()):.4f}, " + ", ".join(f"{p[:-1]} {value:.4f}" for p, value in best.items()) + ".",
                  "", f"| group | shipped evaluation | {rule_column} | {short} imposed (post hoc) |",
                  "|---|---:|---:|---:|"]
        for group in groups:
            if group in forced[split]["groups"]:
                train = forced[split]["groups"][group]["train_acc"]["mae"]
                lines.append(f"| {group} ({train:.3f}) | {cell(shipped[split], group)} | {cell(ruled[split], group)} "
                             f"| {cell(forced[split], group)} |")
        lines.append("")
    (OUT / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def report(records, results) -> str:
    lines = [f"# The estimator (v5, its candidates and baselines): held-out evaluation ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             "Generated by `python zoo/study_estimate.py` from the caches of `zoo/study_validity.py compute`, "
             "`zoo/study_curve.py` and the patch votes (`with_patches`). Beside the estimate, each unfitted "
             "baseline read as the accuracy: training accuracy, the pixel vote (raw, at the training set's size "
             "whole and by part), the patch vote at the training set's size, and the scorecard's own estimate "
             "(columns 'v0.2': the estimator of the genaudit that made the caches, v0.2 on the first machine, the "
             "published v5.2 in caches made by genaudit 0.5.x). Each split's "
             "rule chooses among " + ("the forms that read the patch space (rule P)." if IMAGE_CANDIDATES is PATCH_FORMS
                                      else "every form (the rule before P)."), "",
             "Models: " + ", ".join(f"{g} {sum(group_of(r) == g for r in records)}"
                                    for g in sorted({group_of(r) for r in records})) + ".", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", f"Form chosen inside the fitting data ({res['fit_models']} models): **{res['form']}**, fitted by "
                  f"{res['loss']}; "
                  f"gap = {res['intercept']:+.3f} " + " ".join(f"{c:+.3f}·{f}" for f, c in res["coefficients"].items())
                  + f"; normalized conformal q90 {res['quantile_90']:.2f}.", "",
                  "| group | models | estimate MAE | bias | τ | 90% coverage | width | pick ≤ 2 pts | pick ≤ 0.5 pt "
                  "| train acc MAE | train acc τ | vote MAE | vote τ | vote at N MAE | vote at N τ | by part MAE | "
                  "by part τ | patch vote at N MAE | patch vote at N τ | v0.2 MAE | v0.2 τ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                  "---:|"]
        for group, row in res["groups"].items():
            e, t, v, n, o = row["estimate"], row["train_acc"], row["vote_input"], row["vote_at_size"], row["v0.2"]
            b, z = row["vote_by_part"], row["patches_at_size"]
            lines.append(f"| {group} | {e['models']} | **{fmt(e['mae'])}** | {fmt(e['bias'])} | {fmt(e['tau'])} | "
                         f"{fmt(e['coverage_90'], 2)} | {fmt(e['width_90'], 2)} | {fmt(e['pick_2pt'], 2)} | "
                         f"{fmt(e['pick_half_pt'], 2)} | {fmt(t['mae'])} | {fmt(t['tau'])} | {fmt(v['mae'])} | "
                         f"{fmt(v['tau'])} | {fmt(n['mae'])} | {fmt(n['tau'])} | {fmt(b['mae'])} | {fmt(b['tau'])} | "
                         f"{fmt(z['mae'])} | {fmt(z['tau'])} | {fmt(o['mae'])} | {fmt(o['tau'])} |")
        lines += ["", "CV MAE of each form inside the fitting data (LAD: least absolute deviations): "
                  + "; ".join(f"{f.split(':')[0]}{' LAD' if f.endswith(f'({ABSOLUTE})') else ''} {v:.4f}"
                              for f, v in res["cv"].items()), ""]
    lines += ["## Post hoc: form D (not among the forms the rule picks from)", "", f"**{next(iter(DIRECT))}**, "
              "fitted and calibrated on each split's fitting data like the chosen form.", "",
              "| evaluation | group | models | MAE | 90% coverage | width | τ | pick ≤ 0.5 pt | chosen form's MAE |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        for group, row in res["groups"].items():
            if "direct" in row:
                d = row["direct"]
                lines.append(f"| {name} | {group} | {d['models']} | **{fmt(d['mae'])}** | {fmt(d['coverage_90'], 2)} | "
                             f"{fmt(d['width_90'], 2)} | {fmt(d['tau'])} | {fmt(d['pick_half_pt'], 2)} | "
                             f"{fmt(row['estimate']['mae'])} |")
    return "\n".join(lines) + "\n"


def fitted(records, candidates: list[str] | None = None) -> dict:
    """The form and loss the rule chooses on `records` (among `candidates`), fitted and calibrated on all of them,
    as estimate_model.json holds it."""
    form, loss, cv = choose(records, candidates)
    model = calibrate(records, form, loss)
    terms = {}
    for name in model["coefficients"]:
        paths = PATHS[name]
        terms[name] = ({"paths": paths[0], "times": paths[1]} if isinstance(paths, tuple) else {"paths": paths})
        terms[name]["description"] = DESCRIPTIONS[name]
    return {"form": form, "loss": loss, "terms": terms, "intercept": model["intercept"],
            "coefficients": model["coefficients"], "range": model["range"],
            "conformal": {**model["conformal"], "scale_floor": SCALE_FLOOR, "level": 0.9}, "cv_mae": _cv_table(cv)}


def spec(records) -> dict:
    """genaudit/estimate_model.json: the form chosen on all the data, fitted and calibrated on all of it; and the
    fallback for audits without a patch space (samples that are not images): the rule among the forms that do not
    read it."""
    return {
        "version": 7,
        "what": "expected accuracy on held-out data from the training data's distribution, with a 90% interval; "
                "read from a scorecard audited WITH labels (the training labels as given)",
        "formula": "estimate = clip(clean_accuracy - gap, 0, 1), gap = intercept + sum_k coefficients[k] * x_k, "
                   "x_k = the signed sum of the scorecard values at terms[k].paths ('-' = subtract), times that of "
                   "terms[k].times if given; interval = estimate -/+ max(conformal.quantile_90 * (scale_floor + "
                   "|gap|) + sum_k |coefficients[k]| * excess_k, conformal.abs_unreliable if "
                   "diagnostics.neighbours.input.vote_consistency < conformal.unreliable_below), excess_k = how far "
                   "x_k lies outside range[k], clipped to [0, 1]; where a term is missing, the same with `fallback`",
        **fitted(records, IMAGE_CANDIDATES),
        "fallback": {**fitted(records, [form for form in FORMS if form not in PATCH_FORMS]),
                     "when": "no patch space in this audit (the samples are not images of at least 6x6 pixels), "
                             "so the estimator is the one chosen among the forms that do not read it"},
        "fitted_on": {"models": len(records), "zoos": sorted({r["zoo"] for r in records}),
                      "datasets": sorted({r["dataset"] for r in records}),
                      "archs": sorted({r["arch"] for r in records})},
        "requires": {"samples": 2000},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write-estimator", action="store_true", help="also write genaudit/estimate_model.json")
    p.add_argument("--name", default="estimate_v4",
                   help="write zoo/validity/<name>.md and .json (another name keeps the published tables: a rerun on "
                        "rebuilt zoos)")
    args = p.parse_args(argv)
    if args.write_estimator and CALIBRATION != "group-out":
        p.error(f"--write-estimator writes the shipped calibration (group-out), not {CALIBRATION}")
    records = study_records()
    results = evaluate(records, IMAGE_CANDIDATES)
    name = args.name if CALIBRATION == "group-out" else f"{args.name}_{CALIBRATION}"  # explorations apart
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=1))
    (OUT / f"{name}.md").write_text(report(records, results))
    print(report(records, results))
    if args.write_estimator:
        (ROOT / "genaudit" / "estimate_model.json").write_text(json.dumps(spec(records), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
