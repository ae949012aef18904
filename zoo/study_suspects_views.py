#!/usr/bin/env python
"""Does a model's doubt about a sample under small perturbations of the image find its wrong labels better than
the neighbours alone, from one model? An exploration for `genaudit suspects` on natural images (item 6 of the
validity issue: AUROC >= 0.90 on CIFAR-10 at 20-60% wrong labels; one model reaches 0.84 / 0.78 / 0.71).

    python zoo/study_suspects_views.py [--jobs 2]     # -> zoo/suspects/views.md and .json

The idea: a network that memorized a wrong label fits it on a narrow spike around the image; a label that agrees
with its class is fitted on a wide basin. So a small perturbation of the image lowers the model's probability of
a wrong given label more than of a right one, even when training fitted both (where the clean probability, the
"doubt" of the table, says nothing).

Fixed before the first run (candidates, views, rule), the suspicion s being today's single-model suspicion
(`genaudit.diagnostics.memorization.suspicion`) and conf_v the model's probability of the given label on view v:

- C0  s (today);
- Cd  (s + 1 - conf_clean) / 2: the control, the doubt on the unperturbed image;
- Cn  (s + mean_v (1 - conf_v)) / 2 over two draws of Gaussian noise of 0.25 x the audited data's standard
      deviation (preprocessed pixels, one scalar), seeds 0 and 1;
- Cs  the same over four shifts of 2 pixels (up, down, left, right; the edge pixels repeated);
- Cns the same over all six views.

Rule: the candidate with the best mean AUROC on the label-noise zoo's MNIST models (every architecture and
regularizer, 20 / 40 / 60% wrong labels, last checkpoint) is chosen if it beats C0 by at least 0.005, else C0.
Fashion-MNIST (same zoo) and CIFAR-10 (the real-use zoo's corrupted runs, last checkpoint) are reported, never
chosen on. Each model is audited as `genaudit suspects` audits it: 2,000 seeded samples, seed 0, the labels it
was trained on; the truth (which labels are wrong) is never shown to genaudit. (Before the rule was written, one
CIFAR-10 model was run as a smoke test of this script: C0 0.818, Cd 0.881, Cs 0.882.)

Stage 1's result: the rule keeps C0 (the views lower MNIST from 0.977 to 0.930-0.972), while on CIFAR-10 the
shifts gain 0.05 (C0 0.790, Cs 0.847). The neighbours are good judges on MNIST-like data and weak ones on natural
images, and the audit already says which (`memorization.judges`, below 0.5 = weak, a threshold fixed in 0.5.2).
Stage 2, fixed after stage 1's tables and before the runs it is evaluated on existed:

- G   Cs where the neighbours are weak judges (`judges` vote consistency < 0.5), else C0. Cs is the natural-image
      branch because it had the best mean AUROC on the real-use zoo's CIFAR-10 runs, which are therefore its
      selection data from here on.
- Evaluated on fresh CIFAR-10 runs (`python zoo/build_realuse.py --fresh --jobs 2` -> zoo/fresh: 30% and 50%
  wrong labels, new seeds, CNNs, ResNet-8s and width-32 CNNs; last checkpoint) and on the label-noise zoo.
- Adopted if, on the fresh runs, G's mean AUROC beats C0's by at least 0.02, and on the label-noise zoo (MNIST and
  Fashion-MNIST together) G's mean AUROC is within 0.005 of C0's.

Stage 2 adopted G (genaudit 0.5.3). Stage 3, a run's checkpoints: explored first on the CIFAR-10 runs of the
real-use zoo and of zoo/fresh (both from then on selection data), where the run's suspicion R = (mean_c s_c +
mean_c (1 - conf_c)) / 2 had mean AUROC 0.841 / 0.841 and these variants: RS = (mean_c s_c + mean_c (1 - conf_c)
+ the last checkpoint's shifted doubt) / 3, 0.855 / 0.854; the shifted doubt at every checkpoint instead of the
doubt, 0.851 / 0.854; both doubts averaged, 0.848 / 0.850; one model's spaces weighted by their own vote
consistency, no gain (0.844 / 0.839 against G's 0.847 / 0.845); the feature space alone, worse. Fixed after that
and before the runs it is evaluated on existed:

- RG  RS where the neighbours are weak judges (the last checkpoint's `judges` below 0.5) and the samples are
      images, else R.
- Evaluated on second fresh CIFAR-10 runs (`python zoo/build_realuse.py --fresh2 --jobs 2` -> zoo/fresh2: 25% and
  45% wrong labels, new seeds, 8 runs of 5 checkpoints) and on the label-noise zoo's runs (epochs 1, 2, 4, 8, 16,
  30; 20 / 40 / 60% wrong labels).
- Adopted if, on the second fresh runs, RG's mean AUROC beats R's by at least 0.005, and on the label-noise zoo's
  runs (MNIST and Fashion-MNIST together) RG's mean is within 0.005 of R's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genaudit.diagnostics.memorization import SHIFTS, given_probability, shifted  # noqa: E402
from zoo.study_suspects_cifar import auroc  # noqa: E402

NOISE_ZOO = ROOT / "zoo" / "models"
REALUSE = ROOT / "zoo" / "realuse"
FRESH = ROOT / "zoo" / "fresh"
FRESH2 = ROOT / "zoo" / "fresh2"
LABELS = ROOT / "zoo" / "suspects" / "cache" / "data"
OUT = ROOT / "zoo" / "suspects"
CACHE = OUT / "cache" / "views"  # stage 3's per-model signals
NOISE_EPOCHS = (1, 2, 4, 8, 16, 30)
CANDIDATES = ("C0", "Cd", "Cn", "Cs", "Cns")
WEAK = 0.5  # genaudit.diagnostics.memorization.RELIABLE: neighbours below it are weak judges
SIGMA = 0.25


def views(x: np.ndarray, scale: float, first: int) -> dict[str, np.ndarray]:
    """The six views of a batch whose first sample is audited sample `first` (noise seeded per sample block)."""
    out = {}
    for seed in (0, 1):
        rng = np.random.default_rng([seed, first])
        out[f"noise{seed}"] = (x + SIGMA * scale * rng.standard_normal(x.shape)).astype(np.float32)
    for name, (dy, dx) in zip(("up", "down", "left", "right"), SHIFTS):  # the product's views (genaudit 0.5.3)
        out[name] = np.ascontiguousarray(shifted(x, dy, dx))
    return out


def audited(model: str, npz: str):
    """One model audited as `genaudit suspects` audits it (2,000 seeded samples, seed 0, one thread): the data,
    the trunk pass, its context, and each sample's suspicion and probability of its given label."""
    from genaudit.data import load_data
    from genaudit.options import AuditOptions
    from genaudit.pipeline import trunk_pass
    from genaudit.registry import Context
    from genaudit.suspects import judged

    dataset = load_data(npz, samples=2000, seed=0)
    opts = AuditOptions(threads=1)
    done = trunk_pass(model, dataset, opts, every=True)
    context = Context(done.fs, opts, done.cut, dataset, done.layout, done.spaces)
    _, s, conf = judged(context)
    return dataset, done, context, s, conf


def one(job: tuple[str, str, str]) -> dict:
    """AUROC of every candidate for one model (`job`: model file, training .npz, truth .npz key source)."""
    from genaudit.data import arrange
    from genaudit.diagnostics.memorization import judges

    model, npz, truth = job
    dataset, done, context, s, conf = audited(model, npz)
    labels = done.fs.labels
    x = np.concatenate(list(dataset.batches(512)))
    scale = float(x.std())
    doubts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), 256):
        part = x[start : start + 256]
        for name, view in views(part, scale, start).items():
            out = done.cut.predict(arrange(view, done.layout))
            doubts.setdefault(name, []).append(1 - given_probability(out, labels[start : start + 256],
                                                                        done.cut.output_kind))
    doubt = {name: np.concatenate(parts) for name, parts in doubts.items()}
    noise = np.mean([doubt["noise0"], doubt["noise1"]], axis=0)
    shifts = np.mean([doubt[n] for n in ("up", "down", "left", "right")], axis=0)
    scores = {"C0": s, "Cd": (s + 1 - conf) / 2, "Cn": (s + noise) / 2, "Cs": (s + shifts) / 2,
              "Cns": (s + (2 * noise + 4 * shifts) / 6) / 2}
    judged_by = judges(context)["vote_consistency"]
    scores["G"] = scores["Cs"] if judged_by < WEAK else scores["C0"]
    wrong = truth_of(truth, dataset.ids)
    return {"file": Path(model).name, **{name: auroc(score, wrong) for name, score in scores.items()},
            "judges": judged_by, "clean_accuracy_given": float(np.mean(done.fs.predictions == labels))}


def truth_of(spec: str, ids) -> np.ndarray:
    """Which audited samples (`ids`, their rows in the source) have a wrong given label: `spec` is
    "path.npz:given_key:true_key"."""
    path, given, true = spec.rsplit(":", 2)
    source = np.load(path)
    index = np.asarray(ids, dtype=np.int64)
    return source[given][index] != source[true][index]


def jobs() -> list[tuple[dict, tuple[str, str, str]]]:
    """Stages 1-2's models: the last checkpoint of every run of `run_jobs` but the second fresh set's."""
    return [({"group": r["group"], "corruption": r["corruption"]}, (r["models"][-1], r["npz"], r["truth"]))
            for r in run_jobs() if r["group"] != "cifar10 fresh2"]


def checkpoint(job: tuple[str, str, bool]) -> str:
    """Stage 3: one checkpoint judged as `genaudit suspects` judges it (its suspicion, its probability of each
    given label, the judges; with `last`, its shifted doubt), cached in CACHE."""
    from genaudit.diagnostics.memorization import judges
    from genaudit.suspects import shifted_doubt

    model, npz, last = job
    out = CACHE / f"{Path(model).parent.name}_{Path(model).stem}.npz"
    if out.exists():
        return str(out)
    dataset, done, context, s, conf = audited(model, npz)
    shifts = shifted_doubt(done, dataset, context.opts.batch_size) if last else None
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, ids=np.asarray(dataset.ids, np.int64), s=s, conf=conf,
             judges=judges(context)["vote_consistency"], **({} if shifts is None else {"sd": shifts}))
    os.replace(tmp, out)
    return str(out)


def run_jobs() -> list[dict]:
    """Stage 3's runs: their checkpoints in training order, training file and truth."""
    runs = []
    noise: dict[str, list[dict]] = {}
    for e in json.loads((NOISE_ZOO / "manifest.json").read_text()):
        if e["corruption"] in (20, 40, 60) and e["epoch"] in NOISE_EPOCHS:
            noise.setdefault(e["run"], []).append(e)
    for run, entries in sorted(noise.items()):
        e = entries[0]
        runs.append({"group": e["dataset"], "corruption": e["corruption"], "run": run,
                     "models": [str(NOISE_ZOO / x["file"]) for x in sorted(entries, key=lambda x: x["epoch"])],
                     "npz": str(LABELS / f"{e['dataset']}_train_c{e['corruption']}.npz"),
                     "truth": f"{NOISE_ZOO / (e['dataset'] + '_train.npz')}:y_c{e['corruption']}:y"})
    for group, zoo in (("cifar10", REALUSE), ("cifar10 fresh", FRESH), ("cifar10 fresh2", FRESH2)):
        if not (zoo / "manifest.json").exists():
            continue
        cifar: dict[str, list[dict]] = {}
        for e in json.loads((zoo / "manifest.json").read_text()):
            if e["dataset"] == "cifar10" and e.get("corruption"):
                cifar.setdefault(e["run"], []).append(e)
        for run, entries in sorted(cifar.items()):
            npz = zoo / entries[0]["train_npz"]
            runs.append({"group": group, "corruption": entries[0]["corruption"], "run": run,
                         "models": [str(zoo / x["file"]) for x in sorted(entries, key=lambda x: x["epoch"])],
                         "npz": str(npz), "truth": f"{npz}:y:y_true"})
    return runs


def run_row(run: dict) -> dict:
    """Stage 3: AUROC of R (the shipped run suspicion) and RG for one run, from the cached checkpoints."""
    from genaudit.diagnostics.memorization import across_checkpoints

    found = [np.load(CACHE / f"{Path(m).parent.name}_{Path(m).stem}.npz") for m in run["models"]]
    last = found[-1]
    r = across_checkpoints([f["s"] for f in found], [f["conf"] for f in found])
    rs = across_checkpoints([f["s"] for f in found], [f["conf"] for f in found], last["sd"])  # the product's, 0.5.3
    weak = float(last["judges"]) < WEAK
    wrong = truth_of(run["truth"], last["ids"])
    return {k: run[k] for k in ("group", "corruption", "run")} | {
        "checkpoints": len(found), "judges": float(last["judges"]), "R": auroc(r, wrong), "RS": auroc(rs, wrong),
        "RG": auroc(rs if weak else r, wrong), "last C0": auroc(last["s"], wrong),
        "last G": auroc((last["s"] + last["sd"]) / 2 if weak else last["s"], wrong)}


def stage3(jobs: int) -> list[str]:
    """Stage 3's table and verdict (markdown lines), its rows into views_runs.json."""
    from multiprocessing import Pool

    runs = run_jobs()
    todo = [(m, r["npz"], k == len(r["models"]) - 1) for r in runs for k, m in enumerate(r["models"])]
    with Pool(jobs) as pool:
        pool.map(checkpoint, todo, chunksize=1)
    rows = [run_row(r) for r in runs]
    fresh2 = [r for r in rows if r["group"] == "cifar10 fresh2"]
    noise = [r for r in rows if r["group"] in ("mnist", "fashion-mnist")]
    verdict = None
    if fresh2:
        verdict = {f"{where}_{c}": float(np.mean([r[c] for r in sel]))
                   for where, sel in (("fresh2", fresh2), ("noise", noise)) for c in ("R", "RG")}
        verdict["adopted"] = (verdict["fresh2_RG"] >= verdict["fresh2_R"] + 0.005
                              and verdict["noise_RG"] >= verdict["noise_R"] - 0.005)
    (OUT / "views_runs.json").write_text(json.dumps({"stage3": verdict, "rows": rows}, indent=1))
    lines = ["", "## Stage 3: a run's checkpoints (R: the run's suspicion; RS: with the last checkpoint's shifted "
             "doubt; RG: RS where the neighbours are weak judges, else R; beside them the last checkpoint alone: "
             "C0, and G as shipped in stage 2)", ""]
    if verdict is not None:
        lines += [f"Second fresh CIFAR-10 runs {verdict['fresh2_R']:.4f} -> {verdict['fresh2_RG']:.4f} (needs "
                  f"+0.005); label-noise zoo runs {verdict['noise_R']:.4f} -> {verdict['noise_RG']:.4f} (needs "
                  f"within 0.005). **{'Adopted' if verdict['adopted'] else 'Not adopted'}.**", ""]
    columns = ("last C0", "last G", "R", "RS", "RG")  # the last checkpoint alone (C0, G), then the run
    lines += ["| runs | wrong labels | runs | judges < 0.5 | " + " | ".join(columns) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(columns)]
    for group in ("mnist", "fashion-mnist", "cifar10", "cifar10 fresh", "cifar10 fresh2"):
        levels = sorted({r["corruption"] for r in rows if r["group"] == group})
        for c in (*levels, None):
            sel = [r for r in rows if r["group"] == group and (c is None or r["corruption"] == c)]
            if sel:
                lines.append(f"| {group} | {'mean' if c is None else f'{c}%'} | {len(sel)} | "
                             f"{sum(r['judges'] < WEAK for r in sel)} | "
                             + " | ".join(f"{np.mean([r[k] for r in sel]):.3f}" for k in columns) + " |")
    return lines


def adoption(rows: list[dict]) -> dict | None:
    """Stage 2's rule (module docstring) on the rows; None before the fresh runs exist."""
    fresh = [r for r in rows if r["group"] == "cifar10 fresh"]
    noise = [r for r in rows if r["group"] in ("mnist", "fashion-mnist")]
    if not fresh:
        return None
    out = {f"{where}_{c}": float(np.mean([r[c] for r in sel])) for where, sel in (("fresh", fresh), ("noise", noise))
           for c in ("C0", "G")}
    out["adopted"] = out["fresh_G"] >= out["fresh_C0"] + 0.02 and out["noise_G"] >= out["noise_C0"] - 0.005
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    todo = jobs()
    from multiprocessing import Pool

    with Pool(args.jobs) as pool:
        results = pool.map(one, [job for _, job in todo], chunksize=1)
    rows = [{**meta, **result} for (meta, _), result in zip(todo, results)]
    mnist = [r for r in rows if r["group"] == "mnist"]
    means = {c: float(np.mean([r[c] for r in mnist])) for c in CANDIDATES}
    best = max(CANDIDATES, key=lambda c: means[c])
    chosen = best if means[best] >= means["C0"] + 0.005 else "C0"
    stage2 = adoption(rows)
    OUT.mkdir(exist_ok=True)
    (OUT / "views.json").write_text(json.dumps({"chosen": chosen, "mnist_means": means, "stage2": stage2,
                                                "rows": rows}, indent=1))
    columns = (*CANDIDATES, "G")
    lines = ["# Suspects from one model under small perturbations (exploration)", "",
             "Generated by `python zoo/study_suspects_views.py` (the docstring has the candidates and the rules, "
             "fixed before the runs they judge).", "",
             "Stage 1, mean AUROC on MNIST (the rule's data): " + "; ".join(f"{c} {means[c]:.4f}" for c in CANDIDATES)
             + f". Chosen: **{chosen}**.", ""]
    if stage2 is not None:
        lines += [f"Stage 2 (G: Cs where the neighbours are weak judges, else C0): fresh CIFAR-10 runs "
                  f"{stage2['fresh_C0']:.4f} -> {stage2['fresh_G']:.4f} (needs +0.02); label-noise zoo "
                  f"{stage2['noise_C0']:.4f} -> {stage2['noise_G']:.4f} (needs within 0.005). "
                  f"**{'Adopted' if stage2['adopted'] else 'Not adopted'}.**", ""]
    lines += ["| data set | wrong labels | models | judges < 0.5 | " + " | ".join(columns) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(columns)]
    for group in ("mnist", "fashion-mnist", "cifar10", "cifar10 fresh"):
        levels = sorted({r["corruption"] for r in rows if r["group"] == group})
        for c in (*levels, None):
            sel = [r for r in rows if r["group"] == group and (c is None or r["corruption"] == c)]
            if sel:
                weak = sum(r["judges"] < WEAK for r in sel)
                lines.append(f"| {group} | {'mean' if c is None else f'{c}%'} | {len(sel)} | {weak} | "
                             + " | ".join(f"{np.mean([r[k] for r in sel]):.3f}" for k in columns) + " |")
    fresh = [r for r in rows if r["group"] == "cifar10 fresh"]
    if fresh:
        lines += ["", "| fresh run (last checkpoint) | wrong labels | judges | C0 | Cs | G |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['file']} | {r['corruption']}% | {r['judges']:.3f} | {r['C0']:.3f} | {r['Cs']:.3f} | "
                  f"{r['G']:.3f} |" for r in fresh]
    lines += stage3(args.jobs)
    (OUT / "views.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
