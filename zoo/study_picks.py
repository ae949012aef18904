#!/usr/bin/env python
"""`genaudit compare --select best` within full-data training runs: does it pick the best epoch, or say it cannot
tell? The real-use zoo's MNIST / Fashion-MNIST runs (zoo/build_realuse.py) keep one checkpoint per epoch.

    python zoo/study_picks.py                  # -> zoo/validity/picks.md and .json
    python zoo/study_picks.py --samples 4000   # every training image in the files -> picks_4000.md and .json
    python zoo/study_picks.py --zoo fresh_full # the same recipes built again with another seed, runs the published
                                               # estimator never saw (zoo/build_realuse.py --seed 1 --out
                                               # zoo/fresh_full --blocks full-mlp,full-cnn) -> picks_fresh_full.md
    python zoo/study_picks.py --named ../shared/data/torchvision --samples 30000
                                               # the clean-label runs of both zoos audited on the named data set
                                               # (all 60,000 training images, offline) -> picks_named_30000.md

Each run is compared exactly as a user would (`genaudit.compare(checkpoints, train_npz, train_size=60000)`: the
file holds 4,000 of the 60,000 training images, 2,000 seeded samples audited, the labels it was trained on). A
pick is "confident" when compare calls it significant (better than every other checkpoint beyond two standard
errors); a confident pick more than 0.5 points below the run's best held-out accuracy is a confident wrong pick,
the failure the validity issue forbids.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "zoo" / "validity"
TOLERANCE = 0.005


def main(argv=None) -> int:
    import argparse

    import genaudit

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=2000, help="samples audited per checkpoint (default 2000)")
    p.add_argument("--zoo", default="realuse", help="the zoo folder under zoo/ (default realuse)")
    p.add_argument("--named", metavar="DIR", help="audit on the named data set in DIR (torchvision layout, all "
                   "60,000 training images) instead of the runs' 4,000-image files: the clean-label runs of the "
                   "real-use zoo and zoo/fresh_full (the wrong labels of the others exist only in their files)")
    p.add_argument("--name", help="output name in zoo/validity (default from the options: picks, picks_4000, "
                   "picks_fresh_full, ...); another name keeps the published tables, e.g. for zoos rebuilt elsewhere")
    args = p.parse_args(argv)
    samples = args.samples
    if args.named:
        os.environ["GENAUDIT_OFFLINE"] = "1"
        name, zoos = f"picks_named_{samples}", ["realuse", "fresh_full"]
    else:
        name = "picks" + ("" if samples == 2000 else f"_{samples}") + ("" if args.zoo == "realuse" else f"_{args.zoo}")
        zoos = [args.zoo]
    name = args.name or name

    runs: dict[str, list[dict]] = {}
    for folder in zoos:
        for entry in json.loads((ROOT / "zoo" / folder / "manifest.json").read_text()):
            if entry["dataset"] != "cifar10" and not (args.named and entry["corruption"]):
                runs.setdefault(f"{folder}/{entry['run']}" if args.named else entry["run"], []).append(
                    {**entry, "path": ROOT / "zoo" / folder / entry["file"],
                     "npz": ROOT / "zoo" / folder / entry["train_npz"]})
    rows = []
    for run, entries in sorted(runs.items()):
        entries.sort(key=lambda e: e["epoch"])
        data = (dict(data=entries[0]["dataset"], data_dir=args.named) if args.named
                else dict(data=str(entries[0]["npz"])))
        result = genaudit.compare([e["path"] for e in entries], **data, order="given", samples=samples, seed=0,
                                  train_size=entries[0]["train_size"])
        picked = next(e for e in entries if Path(result["selected"]).name == e["file"])
        best = max(e["holdout_accuracy"] for e in entries)
        tied = {Path(p).name for p in result["selection"].get("tied_with", [])} | {picked["file"]}
        tied_best = max(e["holdout_accuracy"] for e in entries if e["file"] in tied)
        rows.append({"run": run, "checkpoints": len(entries), "picked_epoch": picked["epoch"],
                     "best_epoch": max(entries, key=lambda e: e["holdout_accuracy"])["epoch"],
                     "gap_points": round(100 * (best - picked["holdout_accuracy"]), 2),
                     "significant": bool(result["selection"]["significant"]), "tied_with": len(tied) - 1,
                     "best_among_tied_gap_points": round(100 * (best - tied_best), 2)})
        print(rows[-1], flush=True)
    within = [r for r in rows if r["gap_points"] <= 100 * TOLERANCE]
    confident_wrong = [r for r in rows if r["significant"] and r["gap_points"] > 100 * TOLERANCE]
    covered = [r for r in rows if r["best_among_tied_gap_points"] <= 100 * TOLERANCE]
    options = ((f" --named {args.named}" if args.named else "") + ("" if samples == 2000 else f" --samples {samples}")
               + ("" if args.zoo == "realuse" or args.named else f" --zoo {args.zoo}")
               + (f" --name {args.name}" if args.name else ""))
    where = ("clean-label runs of the real-use zoo and zoo/fresh_full, audited on the named data set" if args.named
             else "real-use zoo" if args.zoo == "realuse" else f"zoo/{args.zoo}")
    lines = [f"# Picking the epoch within full-data runs ({where})",
             "", f"Generated by `python zoo/study_picks.py{options}`"
             f" ({samples} samples audited per checkpoint).", "",
             f"- picked within 0.5 points of the run's best epoch: **{len(within)} of {len(rows)}** runs",
             f"- confident (significant) picks more than 0.5 points off: **{len(confident_wrong)}**",
             f"- the best epoch within 0.5 points among the pick and the checkpoints reported tied with it: "
             f"{len(covered)} of {len(rows)}", "",
             "| run | checkpoints | picked epoch | best epoch | gap (points) | significant | tied with |",
             "|---|---:|---:|---:|---:|:---:|---:|"]
    lines += [f"| {r['run']} | {r['checkpoints']} | {r['picked_epoch']} | {r['best_epoch']} | {r['gap_points']:.2f} | "
              f"{'yes' if r['significant'] else 'no'} | {r['tied_with']} |" for r in rows]
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(rows, indent=1))
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
