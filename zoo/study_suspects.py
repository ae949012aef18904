#!/usr/bin/env python
"""Which per-sample signal finds the wrongly labelled (memorized) training samples? The study behind docs/suspects.md.

    python zoo/study_suspects.py compute [--epochs 8,30] [--corruptions 20,40,60] [--jobs 2] [--limit N]
    python zoo/study_suspects.py analyze [--epochs ..] [--corruptions ..] [--tag NAME]
        # --tag: another selection of models (e.g. unseen checkpoints), written as report_NAME.md /
        # results_NAME.json, scored with the fits and formulas of the main study (run the main analyze first)

`compute` runs every selected model of the label-noise zoo (zoo/models/manifest.json) over the 2,000 training
images of its data set, with the labels the run was trained on (`y_c{P}`, written as
zoo/suspects/cache/data/{dataset}_train_c{P}.npz), through genaudit's own trunk pass (`genaudit.pipeline.
trunk_pass`: the same input space, early space -- first activation, pooled to <= 4,096 values -- and feature
layer that `genaudit score` audits). Per sample it stores, in zoo/suspects/cache/models/{model}.npz:

- d_{space}_k{k}: fraction of the k leave-one-out nearest neighbours (genaudit.diagnostics.neighbours.
  nearest_neighbours, Euclidean, ties to the smaller index) whose given label differs from the sample's given
  label, space in input / early / feat, k in 5, 10, 20 (k = 10 is the one studied);
- conf: the model's softmax probability of the given label (cleanlab's self_confidence, in-sample);
- pred, probs: the model's predictions and softmax probabilities (for cleanlab).

`analyze` reads the caches and writes zoo/suspects/results.json and zoo/suspects/report.md (the tables of
docs/suspects.md): AUROC of each signal and candidate combination for "this row's label is wrong" (y_c{P} != y),
per data set, corruption, regularizer, arch, checkpoint; the cleanlab reference; the cross-data-set selection of
the combination (rule below, fixed before the results were read); the memorized-fraction check. Candidates marked
EXPLORATORY (k = 20, vote margin, gated logistic) were added after the k = 10 results were read and are reported
as post hoc. docs/suspects.md quotes the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ZOO = ROOT / "zoo" / "models"
OUT = ROOT / "zoo" / "suspects"
CACHE = OUT / "cache"
KS = (5, 10, 20)
K = 10
SAMPLES = 2000
SEED = 0

# ----------------------------------------------------------------------------------------------- selection rule
# Fixed before any result was read. Candidates are suspicion scores (higher = label more likely wrong), each a
# function of the per-sample signals; "1-conf" = 1 - the model's softmax probability of the given label.
# d_{space}@k = fraction of the k nearest neighbours whose given label differs from the sample's.


def family(k: int, kind: str = "d") -> dict:
    """The candidate list at one k: name -> (signals, fitted?). Order = simplicity (ties go to the earlier)."""
    s = {sp: f"{kind}_{sp}@{k}" for sp in ("input", "early", "feat")}
    return {
        s["input"]: ((s["input"],), False),  # model-free baseline
        s["early"]: ((s["early"],), False),
        s["feat"]: ((s["feat"],), False),
        "1-conf": (("self",), False),  # = cleanlab self_confidence, negated
        f"mean({kind}_input,{kind}_early)@{k}": ((s["input"], s["early"]), False),
        f"mean({kind}_early,{kind}_feat)@{k}": ((s["early"], s["feat"]), False),
        f"mean({kind}_input,{kind}_early,{kind}_feat)@{k}": ((s["input"], s["early"], s["feat"]), False),
        f"mean({kind}_input,{kind}_early,{kind}_feat,1-conf)@{k}": ((s["input"], s["early"], s["feat"], "self"), False),
        f"logistic({kind}_input,{kind}_early,{kind}_feat,1-conf)@{k}": ((s["input"], s["early"], s["feat"], "self"), True),
    }


PRIMARY = family(10)  # the brief's signals (k = 10): the pre-registered selection
# Added AFTER the k = 10 results were read (post hoc, reported as exploratory): k = 20 (genaudit already computes
# the 20 nearest neighbours for vote_consistency), and the vote margin m_{space}@k = (1 + (max_{c != y} n_c - n_y)
# / k) / 2 in [0, 1] (n_c = neighbours labelled c; > 0.5 iff another class outvotes the given label).
EXPLORATORY = {n: v for fam in (family(20), family(10, "m"), family(20, "m")) for n, v in fam.items() if n != "1-conf"}
# Also post hoc (after seeing that 1-conf wins on models that do not memorize, loses on those that do): a logistic
# with a model-level gate g@k = 1 - mean[pred = given | m_input@k > 0.5] (the share of input-outvoted samples the
# model does NOT fit; 1 when none is outvoted), and nf = [pred != given].
for _k, _kind in ((10, "d"), (20, "m")):
    EXPLORATORY[f"logistic({_kind}_input,{_kind}_early,{_kind}_feat,1-conf,gated)@{_k}"] = (
        (f"{_kind}_input@{_k}", f"{_kind}_early@{_k}", f"{_kind}_feat@{_k}", "self", f"self*gate@{_k}",
         f"nf*gate@{_k}", "nf", f"gate@{_k}"), True)
# genaudit 0.5.0 (post hoc, after the patch space shipped for the estimate): the neighbours in the patch space
# (genaudit.patches, built from the training images alone) as a fourth space, or in place of the input space.
# Selected by the same rule among PRIMARY + these (`selection_patches`); the formula genaudit ships since 0.5.0.
PATCHED = {
    "d_patches@10": (("d_patches@10",), False),
    "mean(d_patches,d_early,d_feat)@10": (("d_patches@10", "d_early@10", "d_feat@10"), False),
    "mean(d_input,d_patches,d_early,d_feat)@10": (("d_input@10", "d_patches@10", "d_early@10", "d_feat@10"), False),
}
CANDIDATES = {**PRIMARY, **PATCHED, **EXPLORATORY}
TIE = 0.002  # mean AUROCs within this of the best count as tied; the simplest tied candidate wins
RULE = (
    "On the fitting data set (all its selected models: corruption 20/40/60, epochs 8 and 30), take the candidate "
    "with the highest mean per-model AUROC; candidates within 0.002 of the best are tied and the simplest (earliest "
    "in the candidate list: single signals, then unweighted means, then the fitted logistic) wins. The logistic "
    "combination is fitted on the fitting data set only (sklearn LogisticRegression, C = 1, on every sample of every "
    "fitting model). The selected candidate is then evaluated on the other data set. The shipped formula is the one "
    "selected on MNIST (Fashion-MNIST is its test); the reverse direction is the check."
)
THRESHOLD = 0.5  # suspicion > 0.5 = 'label likely wrong' (memorized-fraction estimate)


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------------------------- compute


def entries(epochs, corruptions) -> list[dict]:
    manifest = json.loads((ZOO / "manifest.json").read_text())
    return [e for e in manifest if e["epoch"] in epochs and e["corruption"] in corruptions]


def label_npz(dataset: str, corruption: int) -> Path:
    path = CACHE / "data" / f"{dataset}_train_c{corruption}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        src = np.load(ZOO / f"{dataset}_train.npz")
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, x=src["x"], y=src[f"y_c{corruption}"].astype(np.int64))
        os.replace(tmp, path)
    return path


def disagreement(indices: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Fraction of the k nearest neighbours whose label differs from the sample's own."""
    return np.mean(y[indices[:, :k]] != y[:, None], axis=1)


def input_neighbours(dataset: str, x_in: np.ndarray):
    from genaudit.diagnostics.neighbours import nearest_neighbours

    path = CACHE / "data" / f"nn_input_{dataset}.npz"
    if path.exists():
        z = np.load(path)
        return z["indices"], z["distances"]
    idx, dist = nearest_neighbours(x_in, max(KS))
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, indices=idx, distances=dist)
    os.replace(tmp, path)
    return idx, dist


def patch_neighbours(dataset: str) -> np.ndarray:
    """The 20 nearest neighbours of each training image in the patch space (`genaudit.patches.patch_space` of the
    images as audited: model- and label-free, so one per data set), cached in CACHE/data."""
    from genaudit.data import load_data
    from genaudit.diagnostics.neighbours import nearest_neighbours
    from genaudit.patches import patch_space

    path = CACHE / "data" / f"nn_patches_{dataset}.npz"
    if path.exists():
        return np.load(path)["indices"]
    ds = load_data(str(label_npz(dataset, 20)), samples=SAMPLES, seed=SEED)
    idx, _ = nearest_neighbours(patch_space(ds.preprocess(ds.x)), max(KS))
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, indices=idx)
    os.replace(tmp, path)
    return idx


def model_path(e: dict) -> Path:
    return CACHE / "models" / (Path(e["file"]).stem + ".npz")


def compute_one(e: dict) -> str:
    from genaudit.data import load_data
    from genaudit.diagnostics.neighbours import nearest_neighbours
    from genaudit.options import AuditOptions
    from genaudit.pipeline import trunk_pass
    from genaudit.spaces import flat_space

    out = model_path(e)
    if out.exists() and "nn_feat" in np.load(out).files:
        return "cached"
    t0 = time.perf_counter()
    npz = label_npz(e["dataset"], e["corruption"])
    ds = load_data(str(npz), samples=SAMPLES, seed=SEED)
    src = np.load(ZOO / f"{e['dataset']}_train.npz")
    assert len(ds.y) == len(src["y"]) and np.array_equal(ds.x, src["x"]), "the audited samples must be all, in order"
    y = np.asarray(ds.y, np.int64)
    truth = np.asarray(src["y"], np.int64)
    done = trunk_pass(str(ZOO / e["file"]), ds, AuditOptions(threads=1))
    fs, spaces = done.fs, done.spaces
    logits = np.asarray(fs.logits, np.float64).reshape(len(y), -1)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    pred = np.asarray(fs.predictions).reshape(-1)
    rec = {"pred": pred.astype(np.int16), "probs": probs.astype(np.float32),
           "conf": probs[np.arange(len(y)), y], "y": y.astype(np.int16), "truth": truth.astype(np.int16)}
    nn = {"input": input_neighbours(e["dataset"], spaces["input"]),
          "early": nearest_neighbours(spaces["early"], max(KS)),
          "feat": nearest_neighbours(flat_space(fs.features), max(KS))}
    for space, (idx, _) in nn.items():
        rec[f"nn_{space}"] = idx.astype(np.int16)  # 20 nearest, ordered: for the exploratory signals
        for k in KS:
            rec[f"d_{space}_k{k}"] = disagreement(idx, y, k).astype(np.float32)
    meta = {"early_layer": done.graph.early_layer(), "feature_layer": done.graph.resolve_layer(None),
            "early_dims": int(spaces["early"].shape[1]), "feature_dims": int(flat_space(fs.features).shape[1]),
            "seconds": round(time.perf_counter() - t0, 2)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, meta=json.dumps(meta), **rec)
    os.replace(tmp, out)
    return f"{meta['seconds']}s early={meta['early_layer']}({meta['early_dims']}) feat={meta['feature_layer']}" \
           f"({meta['feature_dims']})"


def _safe(e: dict) -> tuple[str, str]:
    try:
        return e["file"], compute_one(e)
    except Exception:  # noqa: BLE001 - a study: log and go on
        return e["file"], "FAILED " + traceback.format_exc(limit=3)


def compute(args) -> None:
    todo = entries(args.epochs, args.corruptions)
    # final checkpoints first, alternate data sets, so a partial run is balanced
    todo.sort(key=lambda e: (-e["epoch"], e["corruption"], e["arch"], e["regularizer"], e["dataset"]))
    todo = [e for e in todo if not (model_path(e).exists() and "nn_feat" in np.load(model_path(e)).files)]
    if args.limit:
        todo = todo[: args.limit]
    log(f"{len(todo)} models to compute")
    for ds in sorted({e["dataset"] for e in todo}):  # shared input neighbours, once, before the workers
        from genaudit.data import load_data
        d = load_data(str(label_npz(ds, 0)), samples=SAMPLES, seed=SEED)
        from genaudit.spaces import flat_space
        input_neighbours(ds, np.concatenate([flat_space(b) for b in d.batches(256)]))
        for c in args.corruptions:
            label_npz(ds, c)
    if args.jobs > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(args.jobs) as pool:
            for i, (f, msg) in enumerate(pool.imap_unordered(_safe, todo), 1):
                log(f"[{i}/{len(todo)}] {f}: {msg}")
    else:
        for i, e in enumerate(todo, 1):
            f, msg = _safe(e)
            log(f"[{i}/{len(todo)}] {f}: {msg}")


# ----------------------------------------------------------------------------------------------- analyze


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with mid-ranks for ties (0.5 = chance)."""
    from scipy.stats import rankdata

    pos = np.asarray(positive, bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def signals(z) -> dict:
    """Every per-sample signal from a model's cache: d_{space}@k, m_{space}@k (k in KS) and self = 1 - conf."""
    y = z["y"].astype(np.int64)
    n = len(y)
    out = {"self": 1.0 - z["conf"].astype(np.float64)}
    for sp in ("input", "early", "feat"):
        idx = z[f"nn_{sp}"].astype(np.int64)
        for k in KS:
            lab = y[idx[:, :k]]
            out[f"d_{sp}@{k}"] = np.mean(lab != y[:, None], axis=1)
            assert np.allclose(out[f"d_{sp}@{k}"], z[f"d_{sp}_k{k}"])
            counts = np.zeros((n, max(10, int(y.max()) + 1)))
            np.add.at(counts, (np.repeat(np.arange(n), k), lab.ravel()), 1)
            own = counts[np.arange(n), y].copy()
            counts[np.arange(n), y] = -1
            out[f"m_{sp}@{k}"] = 0.5 * (1.0 + (counts.max(axis=1) - own) / k)
    return out


def load_all(args) -> list[dict]:
    rows = []
    for e in entries(args.epochs, args.corruptions):
        p = model_path(e)
        if not p.exists():
            continue
        z = np.load(p)
        if "nn_feat" not in z.files:
            continue
        sig = signals(z)
        pred, y = z["pred"].astype(np.int64), z["y"].astype(np.int64)
        near = patch_neighbours(e["dataset"])
        for k in KS:
            sig[f"d_patches@{k}"] = np.mean(y[near[:, :k]] != y[:, None], axis=1)
        sig["nf"] = (pred != y).astype(np.float64)
        for k in KS:
            out = sig[f"m_input@{k}"] > 0.5
            gate = 1.0 - float(np.mean(pred[out] == y[out])) if out.any() else 1.0
            sig[f"gate@{k}"] = np.full(len(y), gate)
            sig[f"self*gate@{k}"] = sig["self"] * gate
            sig[f"nf*gate@{k}"] = sig["nf"] * gate
        rows.append({**e, "sig": sig, "pred": z["pred"].astype(np.int64),
                     "probs": z["probs"].astype(np.float64), "y": z["y"].astype(np.int64),
                     "truth": z["truth"].astype(np.int64), "meta": json.loads(str(z["meta"]))})
    return rows


def features_of(r: dict, names) -> np.ndarray:
    return np.stack([r["sig"][n] for n in names], axis=1)


def fit_logistic(rows: list[dict], names) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([features_of(r, names) for r in rows])
    t = np.concatenate([r["y"] != r["truth"] for r in rows])
    m = LogisticRegression(C=1.0, max_iter=1000).fit(x, t)
    return m.coef_[0].astype(float), float(m.intercept_[0])


def score_of(r: dict, cand: str, fits: dict | None = None) -> np.ndarray:
    names, fitted = CANDIDATES[cand]
    x = features_of(r, names)
    if not fitted:  # rounded: means of fractions with denominator k keep their exact ties (as integer counts would)
        return np.round(x.mean(axis=1), 9)
    w, b = fits[cand]
    return 1.0 / (1.0 + np.exp(-(x @ w + b)))


def mean(v) -> float:
    v = [x for x in v if not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def group_table(rows, key, cands, label, auc="auc") -> tuple[list[str], dict]:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dataset"], key(r)), []).append(r)
    res = {}
    lines = [f"| data set | {label} | models | " + " | ".join(cands) + " |",
             "|---|---|---:|" + "---:|" * len(cands)]
    for (ds, g), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        vals = {c: mean([r[auc][c] for r in rs]) for c in cands}
        res[f"{ds}|{g}"] = {"models": len(rs), **vals}
        lines.append(f"| {ds} | {g} | {len(rs)} | " + " | ".join(f"{vals[c]:.3f}" for c in cands) + " |")
    return lines, res


def select(rows, datasets, other, cands: dict) -> dict:
    """The pre-registered rule over the candidate list `cands` (ordered by simplicity)."""
    out = {}
    for ds in datasets:
        fit_rows = [r for r in rows if r["dataset"] == ds]
        fit_auc = {c: mean([r["auc_in"][c] for r in fit_rows]) for c in cands}
        best = max(fit_auc.values())
        chosen = next(c for c in cands if fit_auc[c] >= best - TIE)
        test_rows = [r for r in rows if r["dataset"] == other[ds]]
        out[ds] = {"fit_mean_auroc": fit_auc, "chosen": chosen, "evaluated_on": other[ds],
                   "fit_auroc_chosen": fit_auc[chosen],
                   "test_mean_auroc": mean([r["auc"][chosen] for r in test_rows]),
                   "test_by_corruption": {c: mean([r["auc"][chosen] for r in test_rows if r["corruption"] == c])
                                          for c in sorted({r["corruption"] for r in test_rows})}}
    return out


def analyze(args) -> None:
    import cleanlab
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    rows = load_all(args)
    log(f"{len(rows)} models cached")
    datasets = sorted({r["dataset"] for r in rows})
    other = {d: next((o for o in datasets if o != d), d) for d in datasets}
    fitted = [c for c, (_, f) in CANDIDATES.items() if f]
    fit_rows = rows
    if args.tag:  # another selection of models: keep the fits of the main study (epochs 8, 30; corruption 20-60)
        fit_rows = load_all(argparse.Namespace(epochs=[8, 30], corruptions=[20, 40, 60]))
    fits_by = {ds: {c: fit_logistic([r for r in fit_rows if r["dataset"] == ds], CANDIDATES[c][0]) for c in fitted}
               for ds in datasets}
    for r in rows:
        t = r["y"] != r["truth"]
        r["wrong"] = t
        # out of data set: the logistic candidates scored with the fit of the OTHER data set; in: its own
        r["auc"] = {c: auroc(score_of(r, c, fits_by[other[r["dataset"]]]), t) for c in CANDIDATES}
        r["auc_in"] = {c: (auroc(score_of(r, c, fits_by[r["dataset"]]), t) if CANDIDATES[c][1] else r["auc"][c])
                       for c in CANDIDATES}
        r["auc"]["cleanlab self_confidence"] = auroc(
            -get_label_quality_scores(r["y"], r["probs"], method="self_confidence"), t)
        issues = find_label_issues(r["y"], r["probs"], n_jobs=1)
        tp = int((issues & t).sum())
        r["cleanlab"] = {"flagged": int(issues.sum()), "precision": tp / max(1, int(issues.sum())),
                         "recall": tp / max(1, int(t.sum()))}
        r["train_acc_given"] = float(np.mean(r["pred"] == r["y"]))
        r["mem_true"] = float(np.mean((r["pred"] == r["y"]) & t))

    primary = select(rows, datasets, other, list(PRIMARY))
    patched = select(rows, datasets, other, list(PRIMARY) + list(PATCHED))
    explore = select(rows, datasets, other, list(CANDIDATES))
    ref = "mnist" if "mnist" in datasets else datasets[0]
    shipped = primary[ref]["chosen"]
    recommended = explore[ref]["chosen"]
    if args.tag and (OUT / "results.json").exists():  # another selection: the main study's choices
        main_results = json.loads((OUT / "results.json").read_text())
        shipped, recommended = main_results["shipped"], main_results["recommended"]

    # detectors at > 0.5 and memorized-fraction estimates
    def detect(r, cand, fits):
        s = score_of(r, cand, fits)
        flag = s > THRESHOLD
        t = r["wrong"]
        fit_given = r["pred"] == r["y"]
        tp = int((flag & t).sum())
        return {"flagged": int(flag.sum()), "precision": tp / max(1, int(flag.sum())),
                "recall": tp / max(1, int(t.sum())), "mem_est": float(np.mean(flag & fit_given)),
                "mem_expected": float(np.mean(s * fit_given)) if CANDIDATES[cand][1] else None}

    mem_cands = list(dict.fromkeys([shipped, recommended, "logistic(d_input,d_early,d_feat,1-conf)@10",
                                    "logistic(d_input,d_early,d_feat,1-conf)@20",
                                    "logistic(m_input,m_early,m_feat,1-conf,gated)@20"]))
    for r in rows:
        r["det"] = {c: detect(r, c, fits_by[other[r["dataset"]]]) for c in mem_cands}

    # ----------------------------------------------------------------------------------------- report
    main_c = list(PRIMARY) + ["cleanlab self_confidence"]
    L = ["# Suspects study: tables (generated by `python zoo/study_suspects.py analyze`)", "",
         (f"{len(rows)} models; AUROC per model for 'the given label is wrong' (y_c{{P}} != y), 2,000 training "
          "samples each, then averaged over the models of a cell. A logistic candidate is always scored with the fit "
          "from the *other* data set. 1-conf and cleanlab self_confidence are the same ranking (equal AUROC)."), "",
         "## Selection rule (fixed in advance)", "", RULE, ""]

    def sel_lines(sel, title):
        out = [f"### {title}", ""]
        for ds, s in sel.items():
            out.append(f"- fitted on **{ds}**: chosen **{s['chosen']}**; mean AUROC on {ds} {s['fit_auroc_chosen']:.4f}, "
                       f"on {s['evaluated_on']} {s['test_mean_auroc']:.4f} (by corruption: "
                       + ", ".join(f"{c}%: {v:.4f}" for c, v in s["test_by_corruption"].items()) + ")")
        out += ["", "| candidate | " + " | ".join(f"mean AUROC on {ds} (fit set)" for ds in sel) + " |",
                "|---|" + "---:|" * len(sel)]
        for c in next(iter(sel.values()))["fit_mean_auroc"]:
            out.append(f"| {c} | " + " | ".join(f"{s['fit_mean_auroc'][c]:.4f}" for s in sel.values()) + " |")
        return out + [""]

    L += sel_lines(primary, "Pre-registered candidates (k = 10, the brief's signals)")
    L += sel_lines(patched, "With the patch space (genaudit 0.5.0, post hoc: the same rule over the pre-registered "
                            "candidates and the patch-space ones; what genaudit ships since 0.5.0)")
    L += [f"Shipped by the rule: **{shipped}**", ""]
    L += sel_lines(explore, "Post hoc: the same rule over the k = 10 candidates plus the exploratory ones "
                            "(k = 20, vote margin)")
    L += [f"Chosen by the rule over all candidates: **{recommended}**", "", "### Logistic fits", ""]
    for ds in datasets:
        for c in fitted:
            w, b = fits_by[ds][c]
            L.append(f"- {c} fitted on {ds}: " + ", ".join(f"{n} {v:+.4f}" for n, v in zip(CANDIDATES[c][0], w))
                     + f", intercept {b:+.4f}")
    L.append("")

    results = {"rule": RULE, "selection_primary": primary, "selection_patches": patched,
               "selection_all": explore, "shipped": shipped,
               "recommended": recommended, "models": len(rows), "cleanlab_version": cleanlab.__version__,
               "logistic_fits": {ds: {c: {"names": list(CANDIDATES[c][0]), "coef": fits_by[ds][c][0].tolist(),
                                          "intercept": fits_by[ds][c][1]} for c in fitted} for ds in datasets},
               "tables": {}}
    head = list(dict.fromkeys(["d_input@10", "d_early@10", "d_feat@10", "1-conf", shipped,
                               "logistic(d_input,d_early,d_feat,1-conf)@10", "mean(d_input,d_early,d_feat)@20",
                               recommended, "logistic(m_input,m_early,m_feat,1-conf)@20",
                               "logistic(d_input,d_early,d_feat,1-conf,gated)@10",
                               "logistic(m_input,m_early,m_feat,1-conf,gated)@20"]))
    lines, res = group_table(rows, lambda r: r["corruption"], head, "corruption %")
    results["tables"]["headline"] = res
    L += ["## Headline: mean AUROC by data set × corruption (pre-registered k = 10 first; the rest post hoc)", ""]
    L += lines + [""]
    for ds in datasets:
        rs = [r for r in rows if r["dataset"] == ds]
        L.append(f"- {ds}, all {len(rs)} models: " + ", ".join(
            f"{c} mean {mean([r['auc'][c] for r in rs]):.3f} / min {min(r['auc'][c] for r in rs):.3f}" for c in head))
    L.append("")
    lines, res = group_table(rows, lambda r: f"c{r['corruption']} e{r['epoch']}", head, "corruption, epoch")
    results["tables"]["headline_epoch"] = res
    L += ["## Headline by corruption and checkpoint", ""] + lines + [""]
    specs = [("corruption", lambda r: r["corruption"], "corruption %"),
             ("epoch", lambda r: r["epoch"], "epoch"),
             ("corruption_epoch", lambda r: f"c{r['corruption']} e{r['epoch']}", "corruption, epoch"),
             ("regularizer", lambda r: r["regularizer"], "regularizer"),
             ("arch", lambda r: r["arch"], "arch")]
    for name, key, label in specs:
        lines, res = group_table(rows, key, main_c, label)
        results["tables"][name] = res
        L += [f"## Mean AUROC by data set × {label} (k = 10)", ""] + lines + [""]
    ex_c = [c for c in EXPLORATORY if "@20" in c and c.startswith(("d_", "mean(d", "logistic(d"))]
    ex_m = [c for c in EXPLORATORY if c.startswith(("m_", "mean(m", "logistic(m"))]
    for title, cands, key, tag in (("k = 20, label disagreement d", ex_c, lambda r: r["corruption"], "k20_corruption"),
                                   ("k = 20, label disagreement d", ex_c,
                                    lambda r: f"c{r['corruption']} e{r['epoch']}", "k20_corruption_epoch"),
                                   ("vote margin m, k = 10 and 20", ex_m, lambda r: r["corruption"], "margin")):
        lines, res = group_table(rows, key, cands, "corruption" if tag != "k20_corruption_epoch" else
                                 "corruption, epoch")
        results["tables"][tag] = res
        L += [f"## Exploratory (post hoc): {title}", ""] + lines + [""]
    lines, res = group_table(rows, lambda r: r["regularizer"], ex_c, "regularizer")
    results["tables"]["k20_regularizer"] = res
    L += ["## Exploratory (post hoc): k = 20 by regularizer", ""] + lines + [""]

    # cleanlab + detectors
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["corruption"], r["epoch"]), []).append(r)
    L += ["## cleanlab reference vs the suspicions as detectors (> 0.5)", "",
          (f"cleanlab {cleanlab.__version__}: `find_label_issues(labels, pred_probs)` (defaults) and "
           "`get_label_quality_scores(..., method='self_confidence')` on the model's in-sample softmax. "
           f"S = shipped ({shipped}); R = rule over all candidates ({recommended}). Flagged = mean count of 2,000."),
          "",
          ("| data set | corr. % | epoch | models | cleanlab AUROC | d_input@10 AUROC | S AUROC | R AUROC | cleanlab "
           "flagged | P | R | S>0.5 flagged | P | R | R>0.5 flagged | P | R |"),
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cl = {}
    for (ds, c, ep), rs in sorted(groups.items()):
        v = {"models": len(rs), "cleanlab_auroc": mean([r["auc"]["cleanlab self_confidence"] for r in rs]),
             "d_input_auroc": mean([r["auc"]["d_input@10"] for r in rs]),
             "shipped_auroc": mean([r["auc"][shipped] for r in rs]),
             "recommended_auroc": mean([r["auc"][recommended] for r in rs]),
             "fli": {q: mean([r["cleanlab"][q] for r in rs]) for q in ("flagged", "precision", "recall")},
             "shipped": {q: mean([r["det"][shipped][q] for r in rs]) for q in ("flagged", "precision", "recall")},
             "recommended": {q: mean([r["det"][recommended][q] for r in rs]) for q in ("flagged", "precision",
                                                                                       "recall")}}
        cl[f"{ds}|c{c}|e{ep}"] = v
        L.append(f"| {ds} | {c} | {ep} | {len(rs)} | {v['cleanlab_auroc']:.3f} | {v['d_input_auroc']:.3f} | "
                 f"{v['shipped_auroc']:.3f} | {v['recommended_auroc']:.3f} | "
                 + " | ".join(f"{v[w]['flagged']:.0f} | {v[w]['precision']:.3f} | {v[w]['recall']:.3f}"
                              for w in ("fli", "shipped", "recommended")) + " |")
    results["tables"]["cleanlab"] = cl

    L += ["", "## Memorized fraction", "",
          ("True = mean [prediction = given label ≠ true label]. Estimates: 'X>0.5' = mean [suspicion X > 0.5 and "
           "prediction = given label] (the brief's estimator); 'E[logistic]' = mean [p_wrong × (prediction = given "
           "label)] with p_wrong the logistic candidate fitted on the *other* data set (an expected count). "
           "Cells: mean estimate over the models (MAE against the per-model truth)."), ""]
    est = [(f"{c}>0.5", c, "mem_est") for c in mem_cands] + \
          [(f"E[{c}]", c, "mem_expected") for c in mem_cands if CANDIDATES[c][1]]
    L += ["| data set | corr. % | epoch | models | train acc (given) | true | " + " | ".join(e[0] for e in est) + " |",
          "|---|---|---|---:|---:|---:|" + "---:|" * len(est)]
    mem = {}
    for (ds, c, ep), rs in sorted(groups.items()):
        v = {"models": len(rs), "train_acc_given": mean([r["train_acc_given"] for r in rs]),
             "true": mean([r["mem_true"] for r in rs])}
        cells = []
        for name, cand, key in est:
            vals = [r["det"][cand][key] for r in rs]
            v[name] = {"estimate": mean(vals), "mae": mean([abs(a - r["mem_true"]) for a, r in zip(vals, rs)])}
            cells.append(f"{v[name]['estimate']:.3f} ({v[name]['mae']:.3f})")
        mem[f"{ds}|c{c}|e{ep}"] = v
        L.append(f"| {ds} | {c} | {ep} | {len(rs)} | {v['train_acc_given']:.3f} | {v['true']:.3f} | "
                 + " | ".join(cells) + " |")
    for ds in datasets:
        rs = [r for r in rows if r["dataset"] == ds]
        v = {"models": len(rs), "true": mean([r["mem_true"] for r in rs])}
        cells = []
        for name, cand, key in est:
            vals = [r["det"][cand][key] for r in rs]
            v[name] = {"estimate": mean(vals), "mae": mean([abs(a - r["mem_true"]) for a, r in zip(vals, rs)]),
                       "bias": mean([a - r["mem_true"] for a, r in zip(vals, rs)])}
            cells.append(f"{v[name]['estimate']:.3f} (MAE {v[name]['mae']:.3f}, bias {v[name]['bias']:+.3f})")
        mem[ds] = v
        L.append(f"| {ds} | all | all | {len(rs)} | | {v['true']:.3f} | " + " | ".join(cells) + " |")
    results["tables"]["memorized"] = mem

    L += ["", f"## Ten lowest per-model AUROCs of the shipped suspicion ({shipped})", "",
          "| model | shipped | recommended | d_input@10 | d_early@10 | d_feat@10 | 1-conf |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["auc"][shipped])[:10]:
        a = r["auc"]
        L.append(f"| {r['file']} | {a[shipped]:.3f} | {a[recommended]:.3f} | {a['d_input@10']:.3f} | "
                 f"{a['d_early@10']:.3f} | {a['d_feat@10']:.3f} | {a['1-conf']:.3f} |")
    results["per_model"] = [{"file": r["file"], "dataset": r["dataset"], "arch": r["arch"],
                             "regularizer": r["regularizer"], "corruption": r["corruption"], "epoch": r["epoch"],
                             "auroc": r["auc"], "cleanlab": r["cleanlab"], "detectors": r["det"],
                             "memorized_true": r["mem_true"], "train_acc_given": r["train_acc_given"],
                             "layers": r["meta"]} for r in rows]
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    (OUT / f"results{suffix}.json").write_text(json.dumps(results, indent=1, default=float))
    (OUT / f"report{suffix}.md").write_text("\n".join(L) + "\n")
    log(f"wrote {OUT / f'report{suffix}.md'} and results{suffix}.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["compute", "analyze"])
    p.add_argument("--epochs", default="8,30")
    p.add_argument("--corruptions", default="20,40,60")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--tag", default="", help="analyze: write report_TAG.md / results_TAG.json (other selections)")
    args = p.parse_args()
    args.epochs = [int(v) for v in args.epochs.split(",")]
    args.corruptions = [int(v) for v in args.corruptions.split(",")]
    (compute if args.command == "compute" else analyze)(args)


if __name__ == "__main__":
    main()
