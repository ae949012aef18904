#!/usr/bin/env python
"""Which checkpoint should `genaudit compare` select when the audit cannot tell the best ones apart?

Within full-data runs the estimate's best checkpoint lies within 0.5 points of the run's best epoch in 28 of 32
fitted runs and 11 of 16 unseen ones (zoo/validity/picks*.md); every miss is a pick tied with others (within two
standard errors), most on Fashion-MNIST plateaus where the estimate moves by about ±0.01 from epoch to epoch while
held-out accuracy creeps up by less. The rules below pick within a series (checkpoints in training order) and were
fixed, with the rule that chooses among them, before this script first ran:

- **best**: the highest estimate (what compare ships).
- **latest-tied**: the latest checkpoint among the best and those tied with it (compare's own `tied_with`).
- **smoothed**: the highest mean estimate over each checkpoint and its neighbours in the series (i−1, i, i+1; two at
  the ends), the usual guard against a noisy validation curve.
- **centre-tied**: the middle checkpoint, in series order, of the best and those tied with it (the earlier of
  the two middle ones).

Added after the first run, not among the choices: **smoothed-tied**, the chosen **smoothed** restricted to the best
and those tied with it, the form compare can ship (it compares unrelated models too, where a neighbour in the
series means nothing; among checkpoints the audit cannot tell apart, any tie-break costs nothing it can measure).

The choice: on the real-use zoo's 32 full-data runs (the estimator was fitted on them; picks.md) the rule with the
most picks within 0.5 points of the run's best epoch; equal counts go to the smaller mean gap, then to **best**.
A rule other than **best** is adopted only if it also keeps zero confident wrong picks (a pick compare calls
significant is the best estimate with nothing tied, so every rule keeps it). The 16 fresh runs (zoo/fresh_full,
never fitted on, never chosen on) then report every rule's count; nothing is chosen on them.

    python zoo/study_tiebreak.py   # -> zoo/validity/tiebreak.md and .json (audits cached in zoo/validity/cache)

Reported beside them after the first run, nothing chosen on them: every rule on the validity study's small-data
zoos (the label-noise zoo and the clean sweep, 5-6 checkpoints per run), read from its cached scorecards with the
published estimate and standard error.

Each run is compared as a user would (`genaudit.compare(checkpoints, train_npz, train_size=60000)`, 2,000 samples,
seed 0, as zoo/study_picks.py).
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
CACHE = OUT / "cache" / "tiebreak"
TOLERANCE = 0.005
ZOOS = {"realuse": "full-data, fitted on; the rule is chosen here", "fresh_full": "full-data, never fitted on",
        "noise": "label-noise zoo, fitted on", "sweep": "clean sweep, fitted on"}


def series(zoo: str) -> list[dict]:
    """Per run: each checkpoint's epoch, estimate, whether it is tied with the best, held-out accuracy and
    whether compare called the pick significant (audited once, then read from the cache)."""
    import genaudit

    if zoo in ("noise", "sweep"):
        return small_series(zoo)
    cached = CACHE / f"{zoo}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    folder = ROOT / "zoo" / zoo
    runs: dict[str, list[dict]] = {}
    for entry in json.loads((folder / "manifest.json").read_text()):
        if entry["dataset"] != "cifar10":
            runs.setdefault(entry["run"], []).append(entry)
    out = []
    for run, entries in sorted(runs.items()):
        entries.sort(key=lambda e: e["epoch"])
        result = genaudit.compare([folder / e["file"] for e in entries], str(folder / entries[0]["train_npz"]),
                                  order="given", samples=2000, seed=0, train_size=entries[0]["train_size"])
        tied = {Path(p).name for p in result["selection"]["tied_with"]} | {Path(result["selected"]).name}
        out.append({"run": run, "significant": bool(result["selection"]["significant"]),
                    "checkpoints": [{"epoch": e["epoch"], "estimate": row["value"], "tied": e["file"] in tied,
                                     "holdout": e["holdout_accuracy"]}
                                    for e, row in zip(entries, result["models"])]})
        print(run, flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(out, indent=1))
    return out


def small_series(zoo: str) -> list[dict]:
    """The same for the validity study's small-data zoos (5-6 checkpoints per run, far apart in training), from its
    cached scorecards: the published estimate and its standard error, tied by compare's own rule."""
    import study_estimate
    from genaudit.comparison import selection
    from genaudit.estimate import estimate

    runs: dict[str, list[dict]] = {}
    for record in study_estimate.study_records():
        if record["zoo"] == zoo:
            runs.setdefault(record["run"], []).append(record)
    out = []
    for run, records in sorted(runs.items()):
        if len(records) < 2:
            continue
        records.sort(key=lambda r: r["epoch"])
        found = [estimate(nested(r["card"])) for r in records]
        values = [f["accuracy"] for f in found]
        ranking = sorted(range(len(values)), key=lambda i: -values[i])  # as compare ranks (stable)
        chosen = selection(ranking, values, [f["standard_error"] for f in found], lambda i: i)
        tied = {ranking[0], *chosen["tied_with"]}
        out.append({"run": run, "significant": chosen["significant"],
                    "checkpoints": [{"epoch": r["epoch"], "estimate": v, "tied": i in tied, "holdout": r["holdout"]}
                                    for i, (r, v) in enumerate(zip(records, values))]})
    return out


def nested(flat: dict) -> dict:
    """A scorecard from the study's flat cache ({"a.b.c": value} -> {"a": {"b": {"c": value}}})."""
    out: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def best(points: list[dict]) -> int:
    return max(range(len(points)), key=lambda i: (points[i]["estimate"], -i))


def latest_tied(points: list[dict]) -> int:
    return max(i for i, p in enumerate(points) if p["tied"])


def neighbourhood_mean(points: list[dict], i: int) -> float:
    """The mean estimate of checkpoint i and its neighbours in the series (i-1, i, i+1; two at the ends)."""
    values = [p["estimate"] for p in points[max(i - 1, 0):i + 2]]
    return sum(values) / len(values)


def smoothed(points: list[dict]) -> int:
    return max(range(len(points)), key=lambda i: (neighbourhood_mean(points, i), -i))


def centre_tied(points: list[dict]) -> int:
    tied = [i for i, p in enumerate(points) if p["tied"]]
    return tied[(len(tied) - 1) // 2]


def smoothed_tied(points: list[dict]) -> int:
    """smoothed, among the best and those tied with it only (what compare ships: it never selects a checkpoint the
    audit can tell is worse than the best, so unrelated models compared in any order are safe)."""
    tied = [i for i, p in enumerate(points) if p["tied"]]
    return max(tied, key=lambda i: (neighbourhood_mean(points, i), -i))


RULES = {"best": best, "latest-tied": latest_tied, "smoothed": smoothed, "centre-tied": centre_tied,
         "smoothed-tied": smoothed_tied}
CHOICES = ("best", "latest-tied", "smoothed", "centre-tied")  # fixed before the first run; smoothed-tied after


def evaluate(runs: list[dict]) -> dict:
    """Per rule: picks within 0.5 points of the run's best held-out accuracy, mean gap (points), confident wrong
    picks (a significant selection more than 0.5 points off) and each run's gap."""
    out = {}
    for name, rule in RULES.items():
        gaps = []
        for run in runs:
            points = run["checkpoints"]
            top = max(p["holdout"] for p in points)
            gaps.append(top - points[rule(points)]["holdout"])
        out[name] = {"within": sum(g <= TOLERANCE + 1e-12 for g in gaps), "runs": len(runs),
                     "mean_gap_points": round(100 * sum(gaps) / len(gaps), 3),
                     "confident_wrong": sum(r["significant"] and g > TOLERANCE + 1e-12 for r, g in zip(runs, gaps)),
                     "gaps_points": [round(100 * g, 2) for g in gaps]}
    return out


def choose(fitted: dict) -> str:
    """The rule fixed before the first run: most picks within 0.5 points, then the smaller mean gap, then best."""
    eligible = [n for n in CHOICES if n == "best" or fitted[n]["confident_wrong"] == 0]
    return min(eligible, key=lambda n: (-fitted[n]["within"], fitted[n]["mean_gap_points"], n != "best"))


def main() -> int:
    results = {zoo: evaluate(series(zoo)) for zoo in ZOOS}
    chosen = choose(results["realuse"])
    lines = ["# Selecting among tied checkpoints within a training run", "",
             "Generated by `python zoo/study_tiebreak.py` (rules and the choice fixed before the first run; see the "
             "script's docstring). Picks within 0.5 points of the run's best epoch / mean gap in points / confident "
             "wrong picks:", "",
             "| rule | " + " | ".join(f"{zoo} ({why})" for zoo, why in ZOOS.items()) + " |",
             "|---|" + "---:|" * len(ZOOS)]
    for name in RULES:
        cells = [f"{r[name]['within']} of {r[name]['runs']} / {r[name]['mean_gap_points']:.2f} / "
                 f"{r[name]['confident_wrong']}" for r in results.values()]
        lines.append(f"| {'**' + name + '**' if name == chosen else name} | " + " | ".join(cells) + " |")
    small = [f"{zoo} {results[zoo][chosen]['within']} against {results[zoo]['best']['within']} of "
             f"{results[zoo]['best']['runs']}" for zoo in ("noise", "sweep")]
    lines += ["", f"The rule chooses **{chosen}** on the fitted full-data runs. Within the small-data zoos' runs "
              f"(5-6 checkpoints far apart in training) it picks within 0.5 points in {' and '.join(small)} runs "
              "for best."]
    for zoo in ("realuse", "fresh_full"):
        runs = series(zoo)
        lines += ["", f"## {zoo}: gap in points per run", "", "| run | " + " | ".join(RULES) + " |",
                  "|---|" + "---:|" * len(RULES)]
        lines += [f"| {run['run']} | " + " | ".join(f"{results[zoo][n]['gaps_points'][k]:.2f}" for n in RULES) + " |"
                  for k, run in enumerate(runs)]
    (OUT / "tiebreak.json").write_text(json.dumps({"chosen": chosen, "results": results}, indent=1))
    (OUT / "tiebreak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
