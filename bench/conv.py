"""Benchmark: conv-layer audits (a head onnxruntime reruns on every variant), this tree against a git revision.

    python bench/conv.py [--against HEAD] [--samples 2000] [--rounds 5] [--layer NAME] [--head-samples N]

ResNet-18 (random weights, 10 classes, 3x32x32; bench/bench.py's model and images, labelled with the model's own
predictions, a seeded 20% replaced by random classes) audited at a conv layer (default: layer3's output,
256x2x2, whose head is layer4 + pool + fc), with --no-labels and with labels. The revision's genaudit package is
exported beside this tree's; each round runs one process per tree (alternating which goes first), each
auditing both cases once after a warm-up audit, so drifts of the shared machine's load hit both trees alike.
Per audit it records the wall time of the audit call in process and genaudit's own timers (features = the trunk
pass, diagnostics = the diagnostics, score = a labelled audit's label-free rerun; a revision without that timer
counts it in `outside`: wall minus the timers), and the scorecards' values, which it compares between the trees.
Prints the medians over rounds, the ratio diagnostics / trunk pass (the performance issue's target: <= 4x) and
which values differ, then the same numbers as JSON. --head-samples: both trees audit with that option (default:
genaudit's, 500), to measure what a smaller head subsample buys.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import CONV_LAYER, build  # noqa: E402

# One process: the given tree's genaudit (not the installed one), a warm-up audit, then each case once.
RUNNER = """
import json, os, sys, time
root = sys.argv[1]
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # an editable install's finder
sys.path.insert(0, root)
import genaudit
assert genaudit.__file__.startswith(root), genaudit.__file__
model, data, layer, samples = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
options = json.loads(sys.argv[6])
genaudit.audit(model, data, samples=200, layer=layer, labels=False)  # imports, sessions, the model cache
out = {}
for case, labels in (("no labels", False), ("labels", True)):
    start = time.perf_counter()
    card = genaudit.audit(model, data, samples=samples, layer=layer, labels=labels, **options)
    wall = time.perf_counter() - start
    values = json.loads(card.to_json())
    out[case] = {"wall": wall, "timers": card.timings,
                 "values": {k: values[k] for k in ("diagnostics", "score", "estimate", "clean_accuracy")}}
print(json.dumps(out))
"""


def export(revision: str, folder: Path) -> Path:
    """The revision's genaudit package, extracted under `folder`."""
    archive = subprocess.run(["git", "archive", revision, "genaudit"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def run(root: Path, model: Path, data: Path, layer: str, samples: int, cache: Path, options: dict) -> dict:
    env = {**os.environ, "GENAUDIT_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(root), str(model), str(data), layer, str(samples),
                           json.dumps(options)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def differences(a, b, path: str = "") -> list[str]:
    """The paths where two JSON values differ (lists of numbers: the largest absolute difference)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}".strip("."))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a + b):
            gap = max((abs(x - y) for x, y in zip(a, b)), default=0)
            return [f"{path}: max |diff| {gap:.4g}"] if gap else []
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a} -> {b}"]


def summary(runs: list[dict]) -> dict:
    """Medians over rounds of one tree's audits of one case."""
    def med(values):
        return round(statistics.median(values), 3)

    timers = [r["timers"] for r in runs]
    outside = [r["wall"] - sum(t.values()) for r, t in zip(runs, timers)]
    return {
        "wall_s": med([r["wall"] for r in runs]),
        "features_s": med([t["features"] for t in timers]),
        "diagnostics_s": med([t["diagnostics"] for t in timers]),
        "score_s": med([t.get("score", 0.0) for t in timers]),
        "outside_timers_s": med(outside),
        "diagnostics_to_trunk_pass": round(statistics.median(t["diagnostics"] / t["features"] for t in timers), 2),
        "rounds": len(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="git revision to compare with (default HEAD)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layer", default=CONV_LAYER)
    parser.add_argument("--head-samples", type=int, default=None, help="audit option for both trees")
    args = parser.parse_args()
    options = {} if args.head_samples is None else {"head_samples": args.head_samples}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, [args.samples])
        model, data = folder / "resnet18.onnx", folder / f"data{args.samples}.npz"
        (folder / "before").mkdir()
        trees = {"before": export(args.against, folder / "before"), "after": REPO}
        results: dict[str, list[dict]] = {side: [] for side in trees}
        for r in range(args.rounds):
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                results[side].append(run(trees[side], model, data, args.layer, args.samples, folder / f"cache-{side}",
                                         options))
        report = {"model": "resnet18 3x32x32, random weights", "layer": args.layer, "samples": args.samples,
                  "against": args.against, "options": options, "cpu_threads": os.cpu_count(), "cases": {}}
        for case in ("no labels", "labels"):
            before = summary([r[case] for r in results["before"]])
            after = summary([r[case] for r in results["after"]])
            changed = differences(results["before"][0][case]["values"], results["after"][0][case]["values"])
            report["cases"][case] = {"before": before, "after": after, "values_changed": changed}
            print(f"{case}: median of {args.rounds} rounds")
            for side, s in (("before", before), ("after", after)):
                print(f"  {side:6}: audit {s['wall_s']:.2f} s = trunk pass {s['features_s']:.2f} s + diagnostics "
                      f"{s['diagnostics_s']:.2f} s ({s['diagnostics_to_trunk_pass']:.1f}x the trunk pass) + score "
                      f"{s['score_s']:.2f} s + outside the timers {s['outside_timers_s']:.2f} s")
            print(f"  values changed: {len(changed)}" + "".join(f"\n    {c}" for c in changed))
        print()
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
