#!/usr/bin/env python
"""Which training-data measures predict a classifier's held-out accuracy? The study behind docs/validity.md.

    python zoo/study_validity.py compute [--zoo noise|sweep|all] [--limit N]   # per-model cache (resumable)
    python zoo/study_validity.py analyze                                        # tables, fits, intervals

`compute` audits every model of the label-noise zoo (zoo/models/manifest.json) and of the clean-label sweep
(zoo/sweep/manifest.json) on its own training images -- the same seeded 2,000 (or fewer) samples genaudit
audits (`genaudit.data.load_data(npz, samples=2000, seed=0)`) -- and stores one JSON per model under
zoo/validity/cache/{zoo}/ (plus the per-sample predictions and margins in a small .npz), so reruns only do the
models that are new. The candidates:

- genaudit's own scorecard (`genaudit.audit(model, npz, samples=2000, seed=0)`): clean accuracy (training
  accuracy against the given labels), the generalization score and every scalar diagnostic;
- neighbour-vote agreement (genaudit/diagnostics/neighbours.py) in the input space (preprocessed pixels), in the
  feature layer's space (the classifier's input) and in an early layer's space (the first ReLU), each with the
  given labels as reference and label-free (the model's predictions as reference), input space at k = 5, 10, 20;
- normalized margins at the feature layer (genaudit/diagnostics/margins.py), reference = given labels and
  reference = predictions.

Label-noise zoo: the model is audited against the labels it was *trained* on (the corrupted ones, `y_c{P}` of
zoo/models/{dataset}_train.npz, written as zoo/validity/cache/data/{dataset}_train_c{P}.npz): that is what a
user has. Held-out accuracy is against true labels on the test split (the manifest's `holdout_accuracy`).

`analyze` reads the caches and writes zoo/validity/results.json and zoo/validity/report.md (every table of
docs/validity.md: the v0.2 study; the published estimator is zoo/study_estimate.py's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genaudit.diagnostics.margins import margins  # noqa: E402
from genaudit.diagnostics.neighbours import nearest_neighbours, neighbour_agreement  # noqa: E402

OUT = ROOT / "zoo" / "validity"
CACHE = OUT / "cache"
ZOOS = {
    "noise": ROOT / "zoo" / "models",
    "sweep": ROOT / "zoo" / "sweep",
    "realuse": ROOT / "zoo" / "realuse",  # zoo/build_realuse.py: full-data recipes and CIFAR-10 (zoo/REALUSE.md)
    "clutter": ROOT / "zoo" / "clutter",  # zoo/build_realuse.py --clutter: mnist-clutter (zoo/study_clutter.py)
}
SAMPLES = 2000
SEED = 0
K = 10

# genaudit scorecard paths kept as candidates (dotted paths of the scorecard)
CARD_PATHS = [
    "clean_accuracy", "score.value", "diagnostics.nodes.accuracy", "diagnostics.ablation.auc",
    "diagnostics.noise.auc", "diagnostics.steadiness.ratio", "diagnostics.consistency.value",
    "diagnostics.selectivity.mean", "diagnostics.selectivity.mutual_information.mean",
    "diagnostics.magnitude.value", "diagnostics.perplexity.value",
    *[f"diagnostics.neighbours.{space}.{v}" for space in ("input", "early", "features")
      for v in ("value", "reference_agreement", "vote_consistency", "samples")],
    "diagnostics.memorization.fraction", "diagnostics.memorization.suspect_fraction",
    "estimate.accuracy",
]


def lookup(card: dict, path: str):
    node = card
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if hasattr(node, "item"):
        node = node.item()
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def flat(block, prefix: str = "") -> dict:
    """A scorecard's numbers under dotted paths (diagnostics.neighbours.patches.value, ...)."""
    out = {}
    for key, value in block.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = float(value)
    return out


# ----------------------------------------------------------------------------------------------- entries


def zoo_entries(zoo: str) -> list[dict]:
    """The models of one zoo, as uniform records: file, dataset, arch, run, group, hp, epoch, holdout, npz."""
    folder = ZOOS[zoo]
    path = folder / "manifest.json"
    if not path.exists():
        return []
    try:
        manifest = json.loads(path.read_text())
    except ValueError:  # being rewritten by the builder: try again next time
        return []
    out = []
    for e in manifest:
        if zoo == "noise":
            npz = CACHE / "data" / f"{e['dataset']}_train_c{e['corruption']}.npz"
            out.append(dict(zoo=zoo, file=str(folder / e["file"]), name=e["file"], dataset=e["dataset"],
                            arch=e["arch"], run=e["run"], group=None, regularizer=e["regularizer"],
                            corruption=e["corruption"], epoch=e["epoch"],
                            hp={"regularizer": e["regularizer"], "corruption": e["corruption"]},
                            holdout=e["holdout_accuracy"], train_used=e["train_accuracy_used_labels"],
                            train_true=e["train_accuracy_true_labels"], npz=str(npz),
                            source_npz=str(folder / f"{e['dataset']}_train.npz"), labels_key=f"y_c{e['corruption']}"))
        else:
            hp = e.get("hyperparameters") or {k: e.get(k) for k in ("width", "depth", "lr", "batch_size",
                                                                       "weight_decay", "dropout", "train_size",
                                                                       "augment", "optimizer")}
            out.append(dict(zoo=zoo, file=str(folder / e["file"]), name=e["file"], dataset=e["dataset"],
                            arch=e["arch"], run=e["run"], group=e.get("group"),
                            groups=e.get("groups") or [e.get("group")], final=e.get("final"),
                            regularizer=None, corruption=e.get("corruption", 0),
                            epoch=e["epoch"], hp=hp, holdout=e["holdout_accuracy"],
                            train_used=e.get("train_accuracy"),
                            train_true=e.get("train_accuracy_true_labels", e.get("train_accuracy")),
                            npz=str(folder / e["train_npz"]), source_npz=None, labels_key=None))
    return out


def ensure_label_npz(entry: dict) -> None:
    """The label-noise zoo's training images with the labels the run was trained on, as genaudit reads them."""
    path = Path(entry["npz"])
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    src = np.load(entry["source_npz"])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=src["x"], y=src[entry["labels_key"]].astype(np.int64))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- compute

_NEIGHBOURS: dict = {}


def input_neighbours(key: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input-space neighbours depend only on the audited images: computed once per data file (k = 20; the
    first k columns are the k nearest for any smaller k) and kept on disk next to the data."""
    full = (key, hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
    if full not in _NEIGHBOURS:
        path = CACHE / "data" / f"nn_{full[1][:16]}.npz"
        if path.exists():
            z = np.load(path)
            _NEIGHBOURS[full] = (z["indices"], z["distances"])
        else:
            _NEIGHBOURS[full] = nearest_neighbours(x, 20)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, indices=_NEIGHBOURS[full][0], distances=_NEIGHBOURS[full][1])
    return _NEIGHBOURS[full]


def early_layer(graph) -> str | None:
    """The first ReLU output of the graph (the first non-linear representation), else the first layer."""
    layers = graph.layers()
    for layer in layers:
        if layer.op == "Relu":
            return layer.name
    return layers[0].name if layers else None


def compute_one(entry: dict) -> tuple[dict, dict]:
    import genaudit
    from genaudit.data import load_data
    from genaudit.models import cut_at
    from genaudit.pipeline import open_for

    t0 = time.perf_counter()
    card = genaudit.audit(entry["file"], entry["npz"], samples=SAMPLES, seed=SEED, threads=1)  # workers share the cores
    t_audit = time.perf_counter() - t0

    t0 = time.perf_counter()
    ds = load_data(entry["npz"], samples=SAMPLES, seed=SEED)
    file, graph, layout = open_for(entry["file"], ds)
    early = early_layer(graph)
    main = graph.resolve_layer(None)
    extra = [early] if early and early != main else []
    cut = cut_at(graph, main, extra)
    feats, logits, earlies = [], [], []
    for batch in ds.batches(256, layout):
        f, o, *rest = cut.trunk(batch)
        feats.append(np.asarray(f, np.float32).reshape(len(batch), -1))
        logits.append(np.asarray(o, np.float32).reshape(len(batch), -1))
        if rest:
            earlies.append(np.asarray(rest[0], np.float32).reshape(len(batch), -1))
    feats, logits = np.concatenate(feats), np.concatenate(logits)
    early_x = np.concatenate(earlies) if earlies else feats
    pred = logits.argmax(axis=1)
    y = np.asarray(ds.y)
    x_in = np.concatenate(list(ds.batches(512, "flat"))).astype(np.float32)

    new = {}
    nn = input_neighbours(entry["npz"], x_in)
    for k in (5, 10, 20):
        out = neighbour_agreement(None, y, pred, k, neighbours=nn)
        new[f"nb_input_k{k}"] = out["value"]
        if k == K:
            new["ref_agree_input"] = out["reference_agreement"]
            new["vote_consistency_input"] = out["vote_consistency"]
    new["nb_input"] = new[f"nb_input_k{K}"]
    free = neighbour_agreement(None, pred, pred, K, neighbours=nn)
    new["nb_input_free"] = free["value"]
    new["vote_consistency_input_free"] = free["vote_consistency"]
    for name, space in (("feat", feats), ("early", early_x)):
        nn_space = nearest_neighbours(space, 2 * K)
        withl = neighbour_agreement(None, y, pred, K, space=name, neighbours=nn_space)
        new[f"nb_{name}"] = withl["value"]
        new[f"ref_agree_{name}"] = withl["reference_agreement"]
        new[f"vote_consistency_{name}"] = withl["vote_consistency"]
        new[f"nb_{name}_free"] = neighbour_agreement(None, pred, pred, K, space=name, neighbours=nn_space)["value"]
    per_sample = {"pred": pred.astype(np.int16)}
    if cut.affine is not None:
        w, b = cut.affine.weight, cut.affine.bias
        m_lab = margins(feats, w, b, y)
        m_pred = margins(feats, w, b, pred)
        new["margins"] = m_lab
        new["margins_free"] = m_pred
    t_new = time.perf_counter() - t0

    record = {k: v for k, v in entry.items()}
    record["card"] = {p: lookup(card, p) for p in CARD_PATHS}
    record["new"] = new
    record["layers"] = {"feature": main, "feature_dims": int(feats.shape[1]), "early": early,
                        "early_dims": int(early_x.shape[1]), "affine": cut.affine is not None}
    record["samples"] = int(len(pred))
    record["seconds"] = {"audit": round(t_audit, 3), "new": round(t_new, 3)}
    return record, per_sample


def cache_path(entry: dict) -> Path:
    return CACHE / entry["zoo"] / (Path(entry["name"]).stem + ".json")


def fresh(entry: dict) -> bool:
    """A cached record counts only if it is newer than the model file (a rebuilt zoo is recomputed)."""
    path = cache_path(entry)
    try:
        return path.stat().st_mtime >= Path(entry["file"]).stat().st_mtime
    except OSError:
        return False


def backfill(zoos: list[str], log) -> None:
    """Add the input-space vote consistency (added to the study later) to cached records: it needs only the
    data and the cached predictions."""
    from genaudit.data import load_data

    n = 0
    for zoo in zoos:
        for e in zoo_entries(zoo):
            path = cache_path(e)
            if not fresh(e):
                continue
            record = json.loads(path.read_text())
            if "vote_consistency_input" in record["new"]:
                continue
            ds = load_data(e["npz"], samples=SAMPLES, seed=SEED)
            x_in = np.concatenate(list(ds.batches(512, "flat"))).astype(np.float32)
            nn = input_neighbours(e["npz"], x_in)
            pred = np.load(path.with_suffix(".npz"))["pred"]
            y = np.asarray(ds.y)
            withl = neighbour_agreement(None, y, pred, K, neighbours=nn)
            assert abs(withl["value"] - record["new"]["nb_input"]) < 1e-12
            record["new"]["vote_consistency_input"] = withl["vote_consistency"]
            record["new"]["vote_consistency_input_free"] = neighbour_agreement(None, pred, pred, K, neighbours=nn)["vote_consistency"]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, path)
            n += 1
    if n:
        log(f"backfilled {n} records")


def compute(zoos: list[str], limit: int | None, log, shard: tuple[int, int] = (0, 1)) -> None:
    if shard[0] == 0:
        backfill(zoos, log)
    per_zoo = []
    for zoo in zoos:
        per_zoo.append([e for e in zoo_entries(zoo) if Path(e["file"]).exists() and not fresh(e)
                        and int(hashlib.sha1(e["run"].encode()).hexdigest(), 16) % shard[1] == shard[0]])
    # round-robin over the zoos, so that partial caches cover both (a run's checkpoints stay together)
    todo = [e for group in __import__("itertools").zip_longest(*per_zoo) for e in group if e is not None]
    log(f"{len(todo)} models to compute")
    done = 0
    for e in todo[: limit or None]:
        if e["zoo"] == "noise":
            ensure_label_npz(e)
        try:
            record, per_sample = compute_one(e)
        except Exception:  # noqa: BLE001 -- keep going; the model is retried on the next run
            log(f"FAILED {e['name']}:\n{traceback.format_exc()}")
            continue
        path = cache_path(e)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        np.savez_compressed(path.with_suffix(".npz"), **per_sample)
        done += 1
        if done % 20 == 0:
            log(f"{done}/{len(todo)} done ({e['name']}: audit {record['seconds']['audit']} s, "
                f"new {record['seconds']['new']} s)")
    log(f"computed {done} models")


def load_records(zoos=("noise", "sweep")) -> list[dict]:
    out = []
    for zoo in zoos:
        known = {Path(e["name"]).stem: e for e in zoo_entries(zoo)}
        for path in sorted((CACHE / zoo).glob("*.json")):
            if path.stem in known and fresh(known[path.stem]):  # metadata: current manifest; measurements: cache
                out.append({**json.loads(path.read_text()), **known[path.stem]})
    return out


# ----------------------------------------------------------------------------------------------- analyze

# candidate -> (how to read it from a cache record, orientation: +1 higher = better, -1 lower = better)
CANDIDATES = {
    "train_acc": (lambda r: r["card"]["clean_accuracy"], +1),
    "score": (lambda r: r["card"]["score.value"], +1),
    "nodes": (lambda r: r["card"]["diagnostics.nodes.accuracy"], +1),
    "ablation": (lambda r: r["card"]["diagnostics.ablation.auc"], +1),
    "noise_auc": (lambda r: r["card"]["diagnostics.noise.auc"], +1),
    "steadiness": (lambda r: r["card"]["diagnostics.steadiness.ratio"], -1),
    "consistency": (lambda r: r["card"]["diagnostics.consistency.value"], -1),
    "selectivity": (lambda r: r["card"]["diagnostics.selectivity.mean"], +1),
    "mi_selectivity": (lambda r: r["card"]["diagnostics.selectivity.mutual_information.mean"], +1),
    "magnitude": (lambda r: r["card"]["diagnostics.magnitude.value"], -1),
    "nb_input": (lambda r: r["new"]["nb_input"], +1),
    "nb_input_k5": (lambda r: r["new"]["nb_input_k5"], +1),
    "nb_input_k20": (lambda r: r["new"]["nb_input_k20"], +1),
    "nb_input_free": (lambda r: r["new"]["nb_input_free"], +1),
    "nb_feat": (lambda r: r["new"]["nb_feat"], +1),
    "nb_feat_free": (lambda r: r["new"]["nb_feat_free"], +1),
    "nb_early": (lambda r: r["new"]["nb_early"], +1),
    "nb_early_free": (lambda r: r["new"]["nb_early_free"], +1),
    "ref_agree_input": (lambda r: r["new"]["ref_agree_input"], +1),
    "vote_consistency": (lambda r: r["new"]["vote_consistency_input"], +1),
    "nb_input_x_consistency": (lambda r: r["new"]["nb_input"] * r["new"]["vote_consistency_input"], +1),
    "margin_neg": (lambda r: r["new"]["margins"]["negative_fraction"], -1),
    "margin_q1": (lambda r: r["new"]["margins"]["log_q1"], +1),
    "margin_q2": (lambda r: r["new"]["margins"]["log_q2"], +1),
    "margin_q3": (lambda r: r["new"]["margins"]["log_q3"], +1),
    "margin_lf": (lambda r: r["new"]["margins"]["log_lower_fence"], +1),
    "margin_uf": (lambda r: r["new"]["margins"]["log_upper_fence"], +1),
    "margin_free_q2": (lambda r: r["new"]["margins_free"]["log_q2"], +1),
    "margin_free_lf": (lambda r: r["new"]["margins_free"]["log_lower_fence"], +1),
    # derived: the neighbour agreement with the share of labels the neighbours outvote added back; and its
    # product with training accuracy
    "nb_input_x_train": (lambda r: r["new"]["nb_input"] * r["card"]["clean_accuracy"], +1),
}
DESCRIPTIONS = {
    "train_acc": "training accuracy on the audited samples (given labels; `clean_accuracy`)",
    "score": "genaudit v0.1 generalization score (`score.value`)",
    "nodes": "nodes-as-classifiers accuracy", "ablation": "ablation AUC", "noise_auc": "noise AUC",
    "steadiness": "intra-class variance ratio (lower better)", "consistency": "consistency C (lower better)",
    "selectivity": "mean class selectivity", "mi_selectivity": "MI selectivity",
    "magnitude": "activation magnitude L_r (lower better, AL2)",
    "nb_input": "neighbour agreement, input space, given labels, k=10",
    "nb_input_k5": "same, k=5", "nb_input_k20": "same, k=20",
    "nb_input_free": "neighbour agreement, input space, label-free (predictions as reference)",
    "nb_feat": "neighbour agreement, feature layer, given labels",
    "nb_feat_free": "neighbour agreement, feature layer, label-free",
    "nb_early": "neighbour agreement, first ReLU layer, given labels",
    "nb_early_free": "neighbour agreement, first ReLU layer, label-free",
    "ref_agree_input": "share of given labels equal to the input-space vote (model-free; label quality)",
    "vote_consistency": "agreement of two disjoint 10-NN votes (odd / even ranks of the 20 nearest), input space, "
                        "given labels (model-free: reliability of the reference)",
    "nb_input_x_consistency": "nb_input x vote_consistency (interaction)",
    "margin_neg": "fraction of negative margins (lower better; = 1 - training accuracy up to ties)",
    "margin_q1": "log margin Q1 (positive margins, normalized)", "margin_q2": "log margin median",
    "margin_q3": "log margin Q3", "margin_lf": "log margin lower fence", "margin_uf": "log margin upper fence",
    "margin_free_q2": "log margin median, predictions as reference",
    "margin_free_lf": "log margin lower fence, predictions as reference",
    "nb_input_x_train": "nb_input x training accuracy",
}


def value_of(r: dict, name: str):
    try:
        v = CANDIDATES[name][0](r)
    except (KeyError, TypeError):
        return None
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def kendall(a, b) -> float | None:
    from scipy.stats import kendalltau

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(kendalltau(a[ok], b[ok]).statistic)


def column(records, name, orient=True):
    sign = CANDIDATES[name][1] if orient and name in CANDIDATES else 1
    return np.array([np.nan if (v := value_of(r, name)) is None else sign * v for r in records])


def tau_of(records, values) -> float | None:
    return kendall(values, [r["holdout"] for r in records])


def granulated(records, values) -> dict:
    """PGDL-style granulated tau: mean tau over groups in which one hyper-parameter varies, all else fixed.
    noise zoo: corruption, regularizer, epoch (checkpoint within a run); sweep: the manifest's one-at-a-time
    `group` (its final checkpoints, the base run included in every group of its data set and architecture)."""
    values = np.asarray(values, float)
    idx = {id(r): i for i, r in enumerate(records)}
    out = {}
    noise = [r for r in records if r["zoo"] == "noise"]
    for hp in ("corruption", "regularizer", "epoch"):
        keys = [k for k in ("dataset", "arch", "regularizer", "corruption", "epoch") if k != hp]
        groups: dict = {}
        for r in noise:
            groups.setdefault(tuple(r[k] for k in keys), []).append(r)
        taus = [t for g in groups.values() if len(g) >= 3
                and (t := kendall(values[[idx[id(r)] for r in g]], [r["holdout"] for r in g])) is not None]
        if taus:
            out[f"noise:{hp}"] = (float(np.mean(taus)), len(taus))
    sweep = [r for r in records if r["zoo"] == "sweep"]
    if sweep:
        last = {}
        for r in sweep:
            if r["run"] not in last or r["epoch"] > last[r["run"]]["epoch"]:
                last[r["run"]] = r
        finals = list(last.values())
        groups = {}
        for r in finals:
            for g in r.get("groups") or [r["group"]]:
                if g is None or g == "base" or str(g).startswith("random"):
                    continue
                groups.setdefault((r["dataset"], r["arch"], g), []).append(r)
        per_hp: dict = {}
        for (d, a, g), members in groups.items():
            if len(members) >= 2:
                t = kendall(values[[idx[id(r)] for r in members]], [r["holdout"] for r in members])
                if t is not None:
                    per_hp.setdefault(g, []).append(t)
        for g, ts in sorted(per_hp.items()):
            out[f"sweep:{g}"] = (float(np.mean(ts)), len(ts))
        # sweep checkpoints within a run, as for the noise zoo's epoch
        runs: dict = {}
        for r in sweep:
            runs.setdefault(r["run"], []).append(r)
        taus = [t for g in runs.values() if len(g) >= 3
                and (t := kendall(values[[idx[id(r)] for r in g]], [r["holdout"] for r in g])) is not None]
        if taus:
            out["sweep:epoch"] = (float(np.mean(taus)), len(taus))
    return out


def selection(records, values, tol=0.02) -> dict:
    """Within-run checkpoint pick: the checkpoint with the best value; hit if its holdout accuracy is within
    `tol` of the run's best. Returns rate, mean gap (points) and the number of runs."""
    values = np.asarray(values, float)
    runs: dict = {}
    for i, r in enumerate(records):
        runs.setdefault((r["zoo"], r["run"]), []).append(i)
    hits, gaps = [], []
    for members in runs.values():
        if len(members) < 2:
            continue
        v = values[members]
        if not np.isfinite(v).any():
            continue
        hold = np.array([records[i]["holdout"] for i in members])
        pick = int(np.nanargmax(np.where(np.isfinite(v), v, -np.inf)))
        gap = hold.max() - hold[pick]
        hits.append(gap <= tol + 1e-12)
        gaps.append(gap)
    if not hits:
        return {"rate": None, "gap": None, "runs": 0}
    return {"rate": float(np.mean(hits)), "gap": float(np.mean(gaps) * 100), "runs": len(hits)}


def subsets(records) -> dict:
    out = {"all": records}
    for zoo in ("noise", "sweep"):
        z = [r for r in records if r["zoo"] == zoo]
        if not z:
            continue
        out[zoo] = z
        for d in ("mnist", "fashion-mnist"):
            zd = [r for r in z if r["dataset"] == d]
            if zd:
                out[f"{zoo}/{d}"] = zd
        for a in sorted({r["arch"] for r in z}):
            out[f"{zoo}/{a}"] = [r for r in z if r["arch"] == a]
    return out


# ---------------------------------------------------------------- estimator


FORMS = {  # candidate estimator forms (least squares on these features, plus an intercept)
    "0: nb_input read as the accuracy (no fit)": ["nb_input"],
    "A: nb_input": ["nb_input"],
    "B: nb_input + train_acc": ["nb_input", "train_acc"],
    "C: nb_input + nb_feat": ["nb_input", "nb_feat"],
    "D: nb_input + train_acc + nb_feat": ["nb_input", "train_acc", "nb_feat"],
    "E: nb_input + train_acc + ref_agree_input": ["nb_input", "train_acc", "ref_agree_input"],
    "F: nb_input + nb_feat + nb_early + train_acc": ["nb_input", "nb_feat", "nb_early", "train_acc"],
    "G: nb_feat + train_acc (no pixel space)": ["nb_feat", "train_acc"],
    "H: nb_input + consistency + nb_input x consistency": ["nb_input", "vote_consistency", "nb_input_x_consistency"],
    "I: H + train_acc": ["nb_input", "vote_consistency", "nb_input_x_consistency", "train_acc"],
    "J: I + nb_feat": ["nb_input", "vote_consistency", "nb_input_x_consistency", "train_acc", "nb_feat"],
    "K: I + margin median": ["nb_input", "vote_consistency", "nb_input_x_consistency", "train_acc", "margin_q2"],
}


def design_matrix(records, feats):
    x = np.array([[value_of(r, f) for f in feats] for r in records], float)
    return x


PARSIMONY = 0.002  # a form with more features must beat the simpler ones by more than this CV MAE


def choose_form(cv: dict) -> str:
    """The form with the fewest features whose grouped-CV MAE (inside the fitting data) is within PARSIMONY of
    the best; ties by CV MAE. Fixed before any evaluation data is looked at."""
    best = min(cv.values())
    near = [f for f, v in cv.items() if v <= best + PARSIMONY]
    return min(near, key=lambda f: (len(FORMS[f]) - (f == UNFITTED), cv[f]))


UNFITTED = "0: nb_input read as the accuracy (no fit)"


def fit_ls(records, feats, form: str | None = None):
    x = design_matrix(records, feats)
    if form == UNFITTED:  # estimate = nb_input: nothing fitted, only the interval is calibrated
        return {"intercept": 0.0, "coefficients": {"nb_input": 1.0},
                "range": {f: [float(np.nanmin(x[:, j])), float(np.nanmax(x[:, j]))] for j, f in enumerate(feats)}}
    y = np.array([r["holdout"] for r in records])
    ok = np.isfinite(x).all(axis=1)
    a = np.column_stack([np.ones(ok.sum()), x[ok]])
    coef, *_ = np.linalg.lstsq(a, y[ok], rcond=None)
    return {"intercept": float(coef[0]), "coefficients": dict(zip(feats, map(float, coef[1:]))),
            "range": {f: [float(np.nanmin(x[:, j])), float(np.nanmax(x[:, j]))] for j, f in enumerate(feats)}}


def predict(model, records):
    feats = list(model["coefficients"])
    x = design_matrix(records, feats)
    b = np.array([model["coefficients"][f] for f in feats])
    raw = model["intercept"] + x @ b
    lo = np.array([model["range"][f][0] for f in feats])
    hi = np.array([model["range"][f][1] for f in feats])
    excess = np.maximum(lo - x, 0) + np.maximum(x - hi, 0)  # how far outside the fitted range
    widen = excess @ np.abs(b)
    return np.clip(raw, 0.0, 1.0), widen


def conformal_quantile(residuals, level=0.9) -> float:
    r = np.sort(np.abs(np.asarray(residuals, float)))
    n = len(r)
    rank = math.ceil((n + 1) * level)
    return float(r[rank - 1]) if rank <= n else float("inf")


def split_runs(records, frac, seed):
    runs = sorted({(r["zoo"], r["run"]) for r in records})
    rng = np.random.default_rng(seed)
    chosen = {runs[j] for j in rng.permutation(len(runs))[: int(round(frac * len(runs)))]}
    return [r for r in records if (r["zoo"], r["run"]) in chosen], [r for r in records if (r["zoo"], r["run"]) not in chosen]


def cv_mae(records, feats, folds=5, seed=0, form=None) -> float:
    """Grouped (by run) k-fold cross-validated MAE inside the fitting data: chooses the form without the
    evaluation data."""
    runs = sorted({(r["zoo"], r["run"]) for r in records})
    rng = np.random.default_rng(seed)
    fold_of = {runs[j]: i % folds for i, j in enumerate(rng.permutation(len(runs)))}
    errs = []
    for f in range(folds):
        tr = [r for r in records if fold_of[(r["zoo"], r["run"])] != f]
        te = [r for r in records if fold_of[(r["zoo"], r["run"])] == f]
        if not tr or not te:
            continue
        m = fit_ls(tr, feats, form)
        p, _ = predict(m, te)
        errs.extend(np.abs(p - np.array([r["holdout"] for r in te])))
    return float(np.nanmean(errs))


RELIABLE_CONSISTENCY = 0.28  # = 0.5^2 + 0.5^2 / 9: two independent votes of accuracy 0.5 over 10 classes agree this often


def reliable(records) -> np.ndarray:
    """Whether the neighbour reference is informative: vote consistency >= RELIABLE_CONSISTENCY (fixed a priori:
    the vote is then at least about 50% accurate; near 0.1 = 1/C it is chance). Model-free."""
    return np.array([(value_of(r, "vote_consistency") or 0.0) >= RELIABLE_CONSISTENCY for r in records])


def fit_conformal(records, feats, seed=0, cal_frac=0.3, form=None):
    """Split conformal: least squares on the proper part (70% of the runs), the 90% quantile (finite-sample
    corrected) of |residual| on the calibration part (30% of the runs, all checkpoints of a run together).
    Mondrian variant: the same quantile computed separately for the calibration models whose neighbour
    reference is reliable (vote consistency >= RELIABLE_CONSISTENCY) and for the others."""
    cal, proper = split_runs(records, cal_frac, seed)
    model = fit_ls(proper, feats, form)
    p, _ = predict(model, cal)
    res = np.abs(p - np.array([r["holdout"] for r in cal]))
    rel = reliable(cal)
    model["conformal"] = {"quantile_90": conformal_quantile(res),
                          "mondrian": {"vote_consistency_min": RELIABLE_CONSISTENCY,
                                       "quantile_90_reliable": conformal_quantile(res[rel]) if rel.any() else float("inf"),
                                       "quantile_90_unreliable": conformal_quantile(res[~rel]) if (~rel).any() else float("inf"),
                                       "calibration_reliable": int(rel.sum()), "calibration_unreliable": int((~rel).sum())},
                          "calibration_models": len(cal), "calibration_runs": len({r["run"] for r in cal}),
                          "fit_models": len(proper)}
    return model


def half_widths(model, records):
    """Plain and Mondrian 90% half-widths, and the out-of-range widening, for each record."""
    _, widen = predict(model, records)
    conf = model["conformal"]
    m = conf["mondrian"]
    mondrian = np.where(reliable(records), m["quantile_90_reliable"], m["quantile_90_unreliable"])
    return np.full(len(records), conf["quantile_90"]), mondrian, widen


def evaluate_estimate(model, records) -> dict:
    p, widen = predict(model, records)
    y = np.array([r["holdout"] for r in records])
    plain, mondrian, _ = half_widths(model, records)
    err = np.abs(p - y)
    ok = np.isfinite(p)
    rel = reliable(records) & ok
    return {
        "models": int(ok.sum()),
        "mae": float(np.mean(err[ok])),
        "median_ae": float(np.median(err[ok])),
        "bias": float(np.mean((p - y)[ok])),
        "coverage_90": float(np.mean(err[ok] <= plain[ok])),
        "coverage_90_widened": float(np.mean(err[ok] <= plain[ok] + widen[ok])),
        "width_90": float(np.mean(2 * plain[ok])),
        "coverage_90_adaptive": float(np.mean(err[ok] <= mondrian[ok] + widen[ok])),
        "width_90_adaptive": float(np.mean(2 * (mondrian[ok] + widen[ok]))),
        "reliable_share": float(np.mean(rel[ok])),
        "mae_reliable": float(np.mean(err[rel])) if rel.any() else None,
        "mae_unreliable": float(np.mean(err[ok & ~rel])) if (ok & ~rel).any() else None,
        "coverage_90_reliable": float(np.mean(err[rel] <= mondrian[rel] + widen[rel])) if rel.any() else None,
        "width_90_reliable": float(np.mean(2 * (mondrian[rel] + widen[rel]))) if rel.any() else None,
        "outside_range": float(np.mean(widen[ok] > 0)),
        "tau": tau_of([r for r, o in zip(records, ok) if o], p[ok]),
        "selection": selection(records, p),
    }


def splits(records) -> dict:
    """Honest evaluations: fit on one part, evaluate on data not fitted on."""
    out = {}
    by = lambda f: [r for r in records if f(r)]  # noqa: E731
    out["fit mnist -> eval fashion-mnist"] = (by(lambda r: r["dataset"] == "mnist"),
                                             by(lambda r: r["dataset"] == "fashion-mnist"))
    out["fit fashion-mnist -> eval mnist"] = (by(lambda r: r["dataset"] == "fashion-mnist"),
                                             by(lambda r: r["dataset"] == "mnist"))
    archs = sorted({r["arch"] for r in records})
    for a in archs:
        out[f"fit other archs -> eval {a}"] = (by(lambda r, a=a: r["arch"] != a), by(lambda r, a=a: r["arch"] == a))
    zoos = sorted({r["zoo"] for r in records})
    if len(zoos) == 2:
        out["fit noise zoo -> eval sweep"] = (by(lambda r: r["zoo"] == "noise"), by(lambda r: r["zoo"] == "sweep"))
        out["fit sweep -> eval noise zoo"] = (by(lambda r: r["zoo"] == "sweep"), by(lambda r: r["zoo"] == "noise"))
    return {k: v for k, v in out.items() if v[0] and v[1]}


def fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def analyze(log) -> None:
    zoos = ("noise", "sweep")  # the v0.2 study's zoos (load_records' default)
    records = [r for r in load_records(zoos) if r["holdout"] is not None]
    log(f"{len(records)} models: " + ", ".join(f"{z} {sum(r['zoo'] == z for r in records)}" for z in zoos))
    results: dict = {"models": {z: sum(r["zoo"] == z for r in records) for z in zoos}}
    md = [f"# Validity study: results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
          "Models: " + ", ".join(f"{z} zoo {n}" for z, n in results["models"].items()) + ".", ""]

    # ---- each candidate alone
    subs = subsets(records)
    cols = [k for k in subs if k != "all"]
    single = {}
    for name in CANDIDATES:
        vals = column(records, name)
        row = {"tau": {k: tau_of(v, column(v, name)) for k, v in subs.items()},
               "granulated": granulated(records, vals),
               "selection": {z: selection([r for r in records if r["zoo"] == z], column([r for r in records if r["zoo"] == z], name))
                             for z in ZOOS if any(r["zoo"] == z for r in records)}}
        single[name] = row
    results["single"] = single
    md += ["## Each candidate alone: oriented Kendall tau with held-out accuracy", "",
           "(+ = ranks the models the right way; `orientation` fixed in advance, see CANDIDATES)", "",
           "| candidate | all | " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) + 1)]
    for name, row in single.items():
        md.append(f"| {name} | " + " | ".join(fmt(row["tau"].get(k)) for k in ["all"] + cols) + " |")
    gkeys = sorted({k for row in single.values() for k in row["granulated"]})
    md += ["", "## Granulated tau (mean tau over groups where one hyper-parameter varies; groups in brackets)", "",
           "| candidate | " + " | ".join(gkeys) + " | mean |", "|---|" + "---:|" * (len(gkeys) + 1)]
    for name, row in single.items():
        g = row["granulated"]
        vals = [g[k][0] for k in gkeys if k in g]
        md.append(f"| {name} | " + " | ".join(fmt(g[k][0]) if k in g else "–" for k in gkeys)
                  + f" | {fmt(float(np.mean(vals)) if vals else None)} |")
    md.append("| (groups) | " + " | ".join(str(single['nb_input']['granulated'].get(k, (0, 0))[1]) for k in gkeys) + " | |")
    md += ["", "## Within-run checkpoint selection (pick the checkpoint with the best value; within 2 points of "
           "the run's best held-out accuracy)", "",
           "| candidate | " + " | ".join(f"{z}: rate | {z}: mean gap (points)" for z in single['nb_input']['selection']) + " |",
           "|---|" + "---:|---:|" * len(single['nb_input']['selection'])]
    for name, row in single.items():
        md.append(f"| {name} | " + " | ".join(f"{fmt(s['rate'], 2)} | {fmt(s['gap'], 1)}" for s in row["selection"].values()) + " |")
    runs_line = ", ".join(f"{z} {s['runs']} runs" for z, s in single['nb_input']['selection'].items())
    md += ["", f"({runs_line}; oracle = 1.00.)", ""]
    # the last checkpoint as a baseline for selection
    last = {}
    for z in ZOOS:
        zr = [r for r in records if r["zoo"] == z]
        if zr:
            last[z] = selection(zr, np.array([r["epoch"] for r in zr], float))
    results["selection_last_checkpoint"] = last
    md += ["Baseline: always the last checkpoint: " + ", ".join(f"{z} {fmt(s['rate'], 2)} (gap {fmt(s['gap'], 1)})" for z, s in last.items()), ""]

    # ---- estimators
    est: dict = {}
    md += ["## Estimator of held-out accuracy (least squares; 90% split-conformal interval)", "",
           "Form chosen per split by grouped (by run) 5-fold CV MAE **inside the fitting data** (marked *: the "
           f"form with the fewest features within {PARSIMONY} of the best CV MAE); every form's held-out numbers "
           "are shown for transparency.", ""]
    for split_name, (fit_set, eval_set) in splits(records).items():
        rows = {}
        for form, feats in FORMS.items():
            model = fit_conformal(fit_set, feats, form=form)
            ev = evaluate_estimate(model, eval_set)
            per = {}
            for k, v in subsets(eval_set).items():
                if k != "all":
                    per[k] = evaluate_estimate(model, v)
            rows[form] = {"cv_mae_fit": cv_mae(fit_set, feats, form=form), "model": model, "eval": ev, "per_group": per}
        chosen = choose_form({f: rows[f]["cv_mae_fit"] for f in rows})
        est[split_name] = {"chosen": chosen, "forms": rows, "fit_models": len(fit_set), "eval_models": len(eval_set)}
        md += [f"### {split_name} (fit {len(fit_set)} models, evaluate {len(eval_set)})", "",
               "| form | CV MAE (fit data) | MAE | bias | 90% coverage (plain / +range widening) | mean width | "
               "Mondrian coverage | Mondrian mean width | reliable share | MAE reliable / unreliable | tau | pick within 2 pts |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for form, row in rows.items():
            e = row["eval"]
            md.append(f"| {form}{' *' if form == chosen else ''} | {fmt(row['cv_mae_fit'])} | {fmt(e['mae'])} | "
                      f"{fmt(e['bias'])} | {fmt(e['coverage_90'], 2)} / {fmt(e['coverage_90_widened'], 2)} | "
                      f"{fmt(e['width_90'], 2)} | {fmt(e['coverage_90_adaptive'], 2)} | {fmt(e['width_90_adaptive'], 2)} | "
                      f"{fmt(e['reliable_share'], 2)} | {fmt(e['mae_reliable'])} / {fmt(e['mae_unreliable'])} | "
                      f"{fmt(e['tau'])} | {fmt(e['selection']['rate'], 2)} |")
        ch = rows[chosen]
        md += ["", f"Chosen form ({chosen.split(':')[0]}) by evaluation group:", "",
               "| group | models | MAE | bias | coverage | Mondrian coverage | Mondrian width | MAE reliable | tau | pick |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k, v in ch["per_group"].items():
            md.append(f"| {k} | {v['models']} | {fmt(v['mae'])} | {fmt(v['bias'])} | {fmt(v['coverage_90'], 2)} | "
                      f"{fmt(v['coverage_90_adaptive'], 2)} | {fmt(v['width_90_adaptive'], 2)} | {fmt(v['mae_reliable'])} | "
                      f"{fmt(v['tau'])} | {fmt(v['selection']['rate'], 2)} |")
        md.append("")
    results["estimators"] = est

    # ---- compact summary for docs/validity.md
    key = ["train_acc", "score", "nodes", "consistency", "steadiness", "ablation", "margin_neg", "margin_q2",
           "margin_lf", "margin_free_lf", "nb_input", "nb_input_k5", "nb_input_free", "nb_feat", "nb_feat_free",
           "nb_early", "nb_early_free", "vote_consistency"]
    tcols = [c for c in ("all", "noise", "noise/mnist", "noise/fashion-mnist", "sweep", "sweep/mnist",
                         "sweep/fashion-mnist") if c in subs]
    sm = ["| candidate | " + " | ".join(f"τ {c}" for c in tcols) + " | granulated τ noise | granulated τ sweep | "
          "pick ≤ 2 pts noise | pick ≤ 2 pts sweep |", "|---|" + "---:|" * (len(tcols) + 4)]
    for name in key:
        row = single[name]
        g = row["granulated"]
        gn = [v[0] for k, v in g.items() if k.startswith("noise:")]
        gs = [v[0] for k, v in g.items() if k.startswith("sweep:")]
        sel = row["selection"]
        sm.append(f"| {name} | " + " | ".join(fmt(row["tau"].get(c)) for c in tcols)
                  + f" | {fmt(float(np.mean(gn)) if gn else None)} | {fmt(float(np.mean(gs)) if gs else None)} | "
                  + f"{fmt(sel.get('noise', {}).get('rate'), 2)} | {fmt(sel.get('sweep', {}).get('rate'), 2)} |")
    results["summary_table"] = sm
    (OUT / "summary.md").write_text("\n".join(sm) + "\n")
    (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (OUT / "report.md").write_text("\n".join(md) + "\n")
    log(f"wrote {OUT / 'report.md'} and results.json")
    # ---- compact estimator table for docs/validity.md: the published form in every split, and the CV choice
    final_form = choose_form({f: cv_mae(records, FORMS[f], form=f) for f in FORMS})
    et = [f"Published form: **{final_form}** (chosen by the same CV rule on all the data).", "",
          "| evaluation (never fitted on) | models | MAE | bias | 90% coverage | mean width | MAE where vote "
          "consistency ≥ 0.28 (share) | MAE elsewhere | τ | pick ≤ 2 pts | form CV chose in this split (its MAE) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for split_name, sp in est.items():
        e = sp["forms"][final_form]["eval"]
        c = sp["forms"][sp["chosen"]]["eval"]
        et.append(f"| {split_name} | {e['models']} | {fmt(e['mae'])} | {fmt(e['bias'])} | {fmt(e['coverage_90'], 2)} | "
                  f"{fmt(e['width_90'], 2)} | {fmt(e['mae_reliable'])} ({fmt(e['reliable_share'], 2)}) | "
                  f"{fmt(e['mae_unreliable'])} | {fmt(e['tau'])} | {fmt(e['selection']['rate'], 2)} | "
                  f"{sp['chosen'].split(':')[0]} ({fmt(c['mae'])}) |")
    et += ["", "| evaluation set | models | τ nb_input alone | MAE of nb_input read as the accuracy (no fit) | "
           "τ genaudit v0.1 score | τ training accuracy | τ published estimator (held out) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for split_name, (fit_set, eval_set) in splits(records).items():
        y = np.array([r["holdout"] for r in eval_set])
        a = column(eval_set, "nb_input")
        e = est[split_name]["forms"][final_form]["eval"]
        et.append(f"| {split_name.split('-> ')[1]} | {len(eval_set)} | {fmt(kendall(a, y))} | "
                  f"{fmt(float(np.mean(np.abs(a - y))))} | {fmt(kendall(column(eval_set, 'score'), y))} | "
                  f"{fmt(kendall(column(eval_set, 'train_acc'), y))} | {fmt(e['tau'])} |")
    (OUT / "summary_estimator.md").write_text("\n".join(et) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compute")
    c.add_argument("--zoo", default="all", choices=[*ZOOS, "all"])
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--shard", default="0/1", help="i/n: only the runs whose name hashes to i mod n (parallel workers)")
    sub.add_parser("analyze")
    args = p.parse_args(argv)

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    if args.cmd == "compute":
        i, n = map(int, args.shard.split("/"))
        compute(list(ZOOS) if args.zoo == "all" else [args.zoo], args.limit, log, (i, n))
    else:
        analyze(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
