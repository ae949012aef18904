"""Benchmark: `genaudit compare` of several checkpoints on one labelled data set, this tree against a git revision.

    python bench/compare.py [--against HEAD~1] [--models 5] [--samples 2000] [--repeats 2]

Builds --models small CNNs (random weights, one seed each) for 3x32x32 images as ONNX files, and one .npz of
--samples random images with labels (the models' own predictions would make no difference: the work is the same).
Then times whole `genaudit compare MODELS --data NPZ --format json` processes run from this tree and from the
revision (checked out into a temporary git worktree), alternately, so drifts of the machine's load hit both alike.
Both use one fresh $GENAUDIT_CACHE, filled by one run of each first (the graphs, and the patch space of the
images: every timed run finds it there). Prints the fastest and median of --repeats runs for each, whether their
comparisons are the same (timings aside), then JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build(folder: Path, models: int, samples: int) -> tuple[list[Path], Path]:
    import torch

    paths = []
    for seed in range(models):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 10)).eval()
        path = folder / f"cnn{seed}.onnx"
        torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
        paths.append(path)
    rng = np.random.default_rng(0)
    data = folder / "data.npz"
    np.savez(data, x=rng.integers(0, 256, (samples, 3, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, samples))
    return paths, data


def run(tree: Path, models: list[Path], data: Path, cache: Path) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree), "GENAUDIT_CACHE": str(cache)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genaudit", "compare", *map(str, models), "--data", str(data),
                           "--format", "json"], env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          check=True)
    return time.perf_counter() - start, json.loads(done.stdout)


def without_timings(document):
    if isinstance(document, dict):
        return {k: without_timings(v) for k, v in document.items() if k != "timings"}
    if isinstance(document, list):
        return [without_timings(v) for v in document]
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD~1", help="the git revision to compare with")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models, data = build(folder, args.models, args.samples)
        worktree = folder / "revision"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), args.against], cwd=REPO, check=True)
        try:
            trees = {"this tree": REPO, args.against: worktree}
            cache = folder / "cache"
            for tree in trees.values():
                run(tree, models, data, cache)  # fills the cache
            times: dict[str, list[float]] = {name: [] for name in trees}
            outputs = {}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    seconds, outputs[name] = run(tree, models, data, cache)
                    times[name].append(seconds)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)
    same = without_timings(outputs["this tree"]) == without_timings(outputs[args.against])
    results = {"models": args.models, "samples": args.samples, "repeats": args.repeats, "same_comparison": same,
               **{name: {"fastest_s": round(min(t), 2), "median_s": round(statistics.median(t), 2)}
                  for name, t in times.items()}}
    for name, t in times.items():
        print(f"{name:<16} fastest {min(t):.2f} s, median {statistics.median(t):.2f} s")
    print(f"same comparison (timings aside): {same}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
