#!/usr/bin/env python
"""Suspects from a training run's checkpoints: does what the run did to each label while it trained find the wrong
labels better than the last checkpoint alone? The study behind `genaudit suspects CHECKPOINTS...` (genaudit 0.5.2,
docs/suspects.md).

    python zoo/study_suspects.py compute --epochs 1,2,4,16 --jobs 2     # the label-noise zoo's other checkpoints
    python zoo/study_suspects_checkpoints.py                            # -> zoo/suspects/checkpoints.md and .json

Candidates, fixed before the first run: per sample, from the C checkpoints of one run (all audited on the same
samples with the run's labels), with s_c the shipped suspicion (the four-space neighbour disagreement) and conf_c
the checkpoint's probability of the given label:

- last: s of the last checkpoint (what `genaudit suspects LAST` gives);
- mean suspicion: mean_c s_c;
- mean doubt: mean_c (1 - conf_c) (after Pleiss et al. 2020's area under the margin);
- mean of both: (mean_c s_c + mean_c (1 - conf_c)) / 2.

Rule, fixed before the first run: the candidate with the highest mean AUROC over the MNIST runs of the label-noise
zoo (20, 40 and 60% wrong labels, six checkpoints: epochs 1, 2, 4, 8, 16, 30) replaces `last` if it beats it by
at least 0.005 there. Evaluated on Fashion-MNIST (the same zoo) and on CIFAR-10 (the real-use zoo's runs with wrong
labels, five checkpoints each, through `genaudit.suspects` exactly as a user runs it). Also reported, after the
choice: the chosen candidate from two checkpoints only (the zoo's epochs 8 and 30; CIFAR-10's epoch 10 and last).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_suspects as SS  # noqa: E402
from study_suspects_cifar import ZOO as REALUSE  # noqa: E402

from genaudit.diagnostics.memorization import across_checkpoints  # noqa: E402

EPOCHS = (1, 2, 4, 8, 16, 30)
TWO = (8, 30)
SHIPPED = ("d_input@10", "d_patches@10", "d_early@10", "d_feat@10")  # the four-space suspicion (docs/suspects.md)
MARGIN = 0.005


def candidates(suspicions: list[np.ndarray], confidences: list[np.ndarray]) -> dict[str, np.ndarray]:
    doubt = 1.0 - np.mean(np.stack(confidences), axis=0)
    return {"last": suspicions[-1], "mean suspicion": np.mean(np.stack(suspicions), axis=0), "mean doubt": doubt,
            "mean of both": across_checkpoints(suspicions, confidences)}


def zoo_runs() -> dict[tuple, list[dict]]:
    """The label-noise zoo's suspects caches, grouped by run, checkpoints in epoch order."""
    runs = collections.defaultdict(list)
    for row in SS.load_all(argparse.Namespace(epochs=list(EPOCHS), corruptions=[20, 40, 60])):
        runs[(row["dataset"], row["corruption"], row["file"].rsplit("_e0", 1)[0])].append(row)
    return {key: sorted(rows, key=lambda r: r["epoch"]) for key, rows in runs.items() if len(rows) == len(EPOCHS)}


def zoo_aurocs(runs: dict) -> dict:
    """AUROC of every candidate, per run, from all six checkpoints and from two."""
    out = {}
    for (dataset, corruption, run), rows in runs.items():
        wrong = rows[0]["y"] != rows[0]["truth"]
        per = {}
        for label, chosen in (("all", rows), ("two", [r for r in rows if r["epoch"] in TWO])):
            s = [np.mean([r["sig"][k] for k in SHIPPED], axis=0) for r in chosen]
            conf = [r["probs"][np.arange(len(r["y"])), r["y"]] for r in chosen]
            per[label] = {name: SS.auroc(score, wrong) for name, score in candidates(s, conf).items()}
        out[run] = {"dataset": dataset, "corruption": corruption, **per}
    return out


def cifar_aurocs() -> dict:
    """`genaudit.suspects` on each CIFAR-10 run with wrong labels: its last checkpoint alone, all its checkpoints,
    and two (epoch 10 and the last)."""
    from genaudit.suspects import suspects

    manifest = json.loads((REALUSE / "manifest.json").read_text())
    runs = collections.defaultdict(list)
    for entry in manifest:
        if entry["dataset"] == "cifar10" and entry.get("corruption"):
            runs[entry["run"]].append(entry)
    out = {}
    for run, entries in sorted(runs.items()):
        entries.sort(key=lambda e: e["epoch"])
        data = np.load(REALUSE / entries[0]["train_npz"])
        wrong = data["y"] != data["y_true"]
        files = [REALUSE / e["file"] for e in entries]
        per = {}
        for label, chosen in (("last", files[-1:]), ("all", files), ("two", [files[2], files[-1]])):
            found = suspects(chosen, str(REALUSE / entries[0]["train_npz"]), samples=2000, seed=0, order="given")
            index = np.array([r["index"] for r in found["rows"]])
            per[label] = SS.auroc(np.array([r["suspicion"] for r in found["rows"]]), wrong[index])
        out[run] = {"corruption": entries[0]["corruption"], "checkpoints": [e["epoch"] for e in entries], **per}
        print(f"{run}: {per}", flush=True)
    return out


def mean(values) -> float:
    return float(np.mean(list(values)))


def main() -> int:
    zoo = zoo_aurocs(zoo_runs())
    names = list(candidates([np.zeros(1)], [np.zeros(1)]))
    by = {(ds, c): [r for r in zoo.values() if r["dataset"] == ds and r["corruption"] == c]
          for ds in ("mnist", "fashion-mnist") for c in (20, 40, 60)}
    fit = {name: mean(mean(r["all"][name] for r in by[("mnist", c)]) for c in (20, 40, 60)) for name in names}
    best = max(fit, key=fit.get)
    chosen = best if fit[best] >= fit["last"] + MARGIN else "last"
    cifar = cifar_aurocs()
    results = {"rule": f"highest mean AUROC on MNIST (six checkpoints), if >= last + {MARGIN}", "mnist_fit": fit,
               "chosen": chosen, "zoo": zoo, "cifar10": cifar}
    (SS.OUT / "checkpoints.json").write_text(json.dumps(results, indent=1))
    lines = ["# Suspects from a run's checkpoints", "", "Generated by `python zoo/study_suspects_checkpoints.py` "
             "(the docstring has the candidates and the rule, fixed before the first run).", "",
             "Mean AUROC on MNIST (the rule's data): " + ", ".join(f"{n} {v:.4f}" for n, v in fit.items()) +
             f". Chosen: **{chosen}**.", "", "## Label-noise zoo (runs of 6 checkpoints; mean AUROC)", "",
             "| data set | wrong labels | runs | " + " | ".join(names) + f" | {chosen}, epochs 8 and 30 only |",
             "|---|---:|---:|" + "---:|" * (len(names) + 1)]
    for (ds, c), rows in by.items():
        lines.append(f"| {ds} | {c}% | {len(rows)} | " + " | ".join(f"{mean(r['all'][n] for r in rows):.3f}"
                                                              for n in names) +
                     f" | {mean(r['two'][chosen] for r in rows):.3f} |")
    for ds in ("mnist", "fashion-mnist"):
        lines.append(f"| {ds} | mean | {sum(len(by[(ds, c)]) for c in (20, 40, 60))} | " + " | ".join(
            f"{mean(mean(r['all'][n] for r in by[(ds, c)]) for c in (20, 40, 60)):.3f}" for n in names) +
            f" | {mean(mean(r['two'][chosen] for r in by[(ds, c)]) for c in (20, 40, 60)):.3f} |")
    lines += ["", "## CIFAR-10 (real-use zoo, runs of 5 checkpoints; `genaudit.suspects` as a user runs it)", "",
              "| wrong labels | runs | last checkpoint alone | all checkpoints | two (epoch 10 and the last) |",
              "|---:|---:|---:|---:|---:|"]
    for c in (20, 40, 60):
        rows = [r for r in cifar.values() if r["corruption"] == c]
        lines.append(f"| {c}% | {len(rows)} | {mean(r['last'] for r in rows):.3f} | {mean(r['all'] for r in rows):.3f}"
                     f" | {mean(r['two'] for r in rows):.3f} |")
    lines += ["", "| run | wrong labels | epochs | last alone | all | two |", "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {run} | {r['corruption']}% | {', '.join(map(str, r['checkpoints']))} | {r['last']:.3f} | "
              f"{r['all']:.3f} | {r['two']:.3f} |" for run, r in cifar.items()]
    (SS.OUT / "checkpoints.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
